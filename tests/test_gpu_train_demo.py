"""tools/gpu_train_demo.py, the one prepared GPU training run, on its CPU path (--dry-run): every step runs,
the releases and the summary are written, the recipe's commands are recorded."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_trains_both_stages_and_writes_the_releases(tmp_path, small_demo):
    """Without fetched photos (DWGN_DATA elsewhere, as on a fresh clone): the packaged photos serve both stages."""
    out, demo = tmp_path / "out", tmp_path / "demo"
    shutil.copytree(small_demo, demo)  # a copy: with other photos than the shared set's, it is rebuilt
    env = {**os.environ, "DWGN_DEMO": str(demo), "DWGN_DATA": str(tmp_path / "no-data"), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_train_demo.py"), "--dry-run", "--budget", "400",
                           "--out", str(out), "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    names = [s["name"] for s in summary["steps"]]
    assert names == ["stage 1", "stage 2 calibration (eager)", "demo set", "stage 2", "export stage 2",
                     "export stage 2 best", "export stage 1"]
    assert all(s["rc"] == 0 for s in summary["steps"])
    assert summary["stage2_steps"] == 6 and summary["cuda_graphs"] is False
    assert "import test_sets; test_sets(" in summary["steps"][2]["command"]  # built beside the steps before Stage 2
    stage2 = summary["steps"][3]["command"]
    assert stage2.startswith("python train.py ") and "--online-weather" in stage2 and "--steps 6" in stage2
    release = torch.load(out / "dwgn-small-demo.pt", weights_only=True)
    assert release["step"] == 6 and release["config"]["model"]["width"] == 32
    assert (out / "dwgn-small-demo-best.pt").is_file() and not (out / "snapshots").exists()  # no --keep-every
    assert "--data" not in summary["steps"][0]["command"]  # no fetched photos: pre-training.py's default
    assert (out / "runs.tar.gz").stat().st_size > 0 and (out / "session.log").read_text().count("exit 0") == 7


def test_without_cuda_it_refuses_to_train(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_train_demo.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 1 and "no CUDA device: nothing trained" in proc.stdout


@pytest.mark.slow
def test_dry_run_with_init_goes_on_from_the_release_without_stage_1(tmp_path, small_demo):
    """--init: no Stage 1, Stage 2 starts from the shipped release with the given learning rate and clean share."""
    out, demo = tmp_path / "out", tmp_path / "demo"
    shutil.copytree(small_demo, demo)
    env = {**os.environ, "DWGN_DEMO": str(demo), "DWGN_DATA": str(tmp_path / "no-data"), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    release = "checkpoints/dwgn-small-demo.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_train_demo.py"), "--dry-run", "--budget", "400",
                           "--out", str(out), "--runs", str(tmp_path / "runs"), "--init", release, "--lr", "1e-4",
                           "--clean-share", "0.3", "--warmup", "0.5", "--weather-weights", "2,1,2,1.5,1",
                           "--train-args", "--tone-share 0.5 --weather-side 128 --keep-every 3"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["stage 2 calibration (eager)", "demo set", "stage 2",
                                                     "export stage 2", "export stage 2 best"]
    assert summary["stage1_init"] == release
    stage2 = summary["steps"][2]["command"]
    assert f"--init {release}" in stage2 and "--lr 0.0001" in stage2 and "--clean-share 0.3" in stage2
    assert "--warmup-steps 3" in stage2  # half of the dry run's 6 steps
    assert "--weather-weights 2,1,2,1.5,1" in stage2 and "--weather-weights 2,1,2,1.5,1" in summary["steps"][0]["command"]
    assert "weathers snow 27%, rainfog 13%, raindrop 27%, rain 20%, haze 13%" in (out / "session.log").read_text()
    assert "initialised from checkpoints/dwgn-small-demo.safetensors" in (out / "session.log").read_text()
    assert torch.load(out / "dwgn-small-demo.pt", weights_only=True)["step"] == 6
    # --train-args reach Stage 2 and its calibration; best.pt and the kept snapshots come back in OUT
    assert "--tone-share 0.5 --weather-side 128 --keep-every 3" in stage2
    assert "--tone-share 0.5 --weather-side 128" in summary["steps"][0]["command"]
    assert "50% of crops toned first, weather made on 128² squares" in (out / "session.log").read_text()
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-000003.safetensors",
                                                                    "step-000006.safetensors"]
    best = torch.load(out / "dwgn-small-demo-best.pt", weights_only=True)
    run_best = torch.load(tmp_path / "runs" / "finetune" / "best.pt", weights_only=True)
    assert 1 <= best["step"] <= 6 and best["step"] == run_best["step"]
    with tarfile.open(out / "runs.tar.gz") as tar:  # the logs, not the weights a second time
        packed = tar.getnames()
    assert "finetune/log.jsonl" in packed and not [n for n in packed if n.endswith((".pt", ".safetensors"))]


def test_a_missing_init_is_refused_before_anything_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_train_demo.py"), "--out", str(tmp_path / "o"),
                           "--init", "checkpoints/nothing.safetensors"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and "--init checkpoints/nothing.safetensors: no such file" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("train_args, message", [
    ("--steps 50", "--train-args sets --steps, which this script sizes or sets itself"),
    ("--tone-share 0.5 --clean_share=0.1", "--train-args sets --clean_share, which this script sizes or sets itself"),
    ("--tone-share 2", "--train-args '--tone-share 2': tone_share must be in [0, 1], got 2.0"),
    ("--weather-sides 256", "unknown config key 'weather_sides'"),
    ('--note "open', "--train-args '--note \"open': No closing quotation"),
])
def test_bad_train_args_are_refused_before_anything_runs(tmp_path, train_args, message):
    """Flags the script sets itself, and values train.py would refuse, stop it before a GPU second is spent."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_train_demo.py"), "--out", str(tmp_path / "o"),
                           f"--train-args={train_args}"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()
