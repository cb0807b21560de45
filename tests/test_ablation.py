"""benchmarks/ablation.py: the variants, the statistics against hand-computed references, and a tiny-budget run."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from dwgn.models.network import build_model, count_parameters

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"
_spec = importlib.util.spec_from_file_location("ablation", _PATH)
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)


def test_matched_none_is_within_two_percent_of_half_and_keeps_the_heads():
    overrides = ablation.matched_none("tiny")
    assert overrides == {"dynamic": "none", "width": 17, "head_dim": 17, "glgf_groups": 1}
    half = count_parameters(build_model("tiny", dynamic="half"))
    matched = count_parameters(build_model("tiny", **overrides))
    assert abs(matched - half) / half < 0.02
    assert count_parameters(build_model("tiny", dynamic="none")) < 0.9 * half  # what the matching is for
    # heads per level as in tiny: width / head_dim = 1 at level 1, doubling with the channels
    assert overrides["width"] // overrides["head_dim"] == 1


def test_small_preset_matched_none_keeps_two_heads_at_level_one():
    overrides = ablation.matched_none("small")
    assert overrides["width"] == 2 * overrides["head_dim"]
    with torch.device("meta"):
        half = count_parameters(build_model("small", dynamic="half"))
        matched = count_parameters(build_model("small", **overrides))
    assert abs(matched - half) / half < 0.02


def test_train_argv_is_identical_across_variants_but_the_model():
    args = ablation.get_parser().parse_args(["--steps", "300", "--lr", "5e-4"])
    argv = {v: ablation.train_argv(v, 1, args, Path("runs/x")) for v in ablation.VARIANTS}

    def without_model(flags: list[str]) -> list[str]:
        out, skip = [], False
        for f in flags:
            if skip:
                skip = False
            elif f.startswith("--model."):
                skip = True
            else:
                out.append(f)
        return out

    assert len({tuple(without_model(a)) for a in argv.values()}) == 1  # same data, seed, budget and schedule
    flags = argv["half"]
    assert flags[flags.index("--lr") + 1] == "0.0005" and flags[flags.index("--lr_min") + 1] == "0.0005"
    assert flags[flags.index("--ema_decay") + 1] == "0.999" and flags[flags.index("--warmup_steps") + 1] == "100"
    assert flags[flags.index("--synth.online") + 1] == "true"
    assert flags[flags.index("--model.dynamic") + 1] == "half"
    assert "--model.width" not in flags
    matched = argv["none-matched"]
    assert matched[matched.index("--model.width") + 1] == "17"


def test_interval_is_the_t_interval():
    values = [1.0, 2.0, 4.0]
    mean, std = 7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    t_975_2 = 4.302653  # Student's t, 2 degrees of freedom, 97.5 % (tables)
    cell = ablation.interval(values)
    assert cell["mean"] == pytest.approx(mean)
    assert cell["std"] == pytest.approx(std)
    assert cell["ci95"] == pytest.approx([mean - t_975_2 * std / math.sqrt(3), mean + t_975_2 * std / math.sqrt(3)],
                                         rel=1e-5)
    assert ablation.interval([3.0]) == {"mean": 3.0, "std": None, "ci95": None}


def _run(variant: str, seed: int, demo: float, heldout: float) -> dict:
    weathers = ("snow", "haze")
    return {"variant": variant, "seed": seed, "params": 10,
            "demo": ablation.with_overall({w: demo + i for i, w in enumerate(weathers)}),
            "heldout": ablation.with_overall({w: heldout for w in weathers}),
            "input": {"demo": ablation.with_overall({w: 20.0 for w in weathers}),
                      "heldout": ablation.with_overall({w: 15.0 for w in weathers})},
            "ssim_y": {"demo": ablation.with_overall({w: demo / 100 for w in weathers}),
                       "heldout": ablation.with_overall({w: heldout / 100 for w in weathers}),
                       "input": {"demo": ablation.with_overall({w: 0.5 for w in weathers}),
                                 "heldout": ablation.with_overall({w: 0.4 for w in weathers})}},
            "probe": {"blocks": {"encoders.0.0": {"kernels": None if variant.startswith("none") else 0.5,
                                                  "branch": 0.4 + seed / 10, "static": 0.3, "input": 0.2}},
                      "n": 10, "photos": 2, "chance": 0.5},
            "train_s": 1.0, "eval_s": 1.0}


def test_paired_differences_are_per_seed_over_the_common_seeds():
    runs = {"none": {0: _run("none", 0, 21.0, 16.0), 1: _run("none", 1, 22.0, 16.5), 2: _run("none", 2, 21.5, 16.0)},
            "half": {0: _run("half", 0, 22.0, 16.5), 1: _run("half", 1, 22.5, 17.5)}}
    out = ablation.paired(runs)
    assert list(out) == ["half - none"]  # the other pairs have no runs
    cell = out["half - none"]
    assert cell["seeds"] == [0, 1]
    assert cell["demo"]["psnr_y"]["overall"]["per_seed"] == pytest.approx([1.0, 0.5])
    assert cell["heldout"]["psnr_y"]["snow"]["per_seed"] == pytest.approx([0.5, 1.0])
    assert cell["demo"]["ssim_y"]["overall"]["mean"] == pytest.approx(0.0075)
    summary = ablation.summarise(runs)
    assert summary["none"]["demo"]["psnr_y"]["overall"]["mean"] == pytest.approx(22.0)  # (21.5 + 22.5 + 22) / 3
    assert summary["half"]["heldout"]["psnr_y"]["overall"]["std"] == pytest.approx(math.sqrt(0.5))
    probe = ablation.probe_summary(runs)
    assert "kernels" not in probe["none"]["encoders.0.0"]
    assert probe["none"]["encoders.0.0"]["branch"]["mean"] == pytest.approx(0.5)


@pytest.mark.slow
def test_tiny_budget_run_writes_the_study_and_resumes(tmp_path, monkeypatch):
    """The command end to end at a budget of 2 steps, scored on a few images; rerun, it trains nothing."""
    import dwgn.data.datasets as datasets
    import dwgn.evaluation.heldout as heldout

    real_sets, real_photos = datasets.test_sets, heldout.heldout_photos
    monkeypatch.setattr(datasets, "test_sets", lambda names: {k: v[:1] for k, v in real_sets(names).items()})
    monkeypatch.setattr(heldout, "heldout_photos", lambda: real_photos()[:2])
    argv = ["--steps", "2", "--batch-size", "1", "--seeds", "0,1", "--variants", "none,half", "--heldout-crops", "1",
            "--probe-crops", "1", "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "ablation.json"),
            "--figure", str(tmp_path / "ablation.png")]
    payload = ablation.main(argv)
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved == json.loads(json.dumps(payload))
    assert (saved["preset"], saved["steps"], saved["batch"], saved["crop"]) == ("tiny", 2, 1, 64)
    assert set(saved["variants"]) == {"none", "half"}
    half = saved["variants"]["half"]
    assert half["dynamic"] == "half" and half["params"] == count_parameters(build_model("tiny"))
    seed = half["seeds"]["1"]
    weathers = {"snow", "rainfog", "raindrop", "rain", "haze", "overall"}
    assert set(seed["demo"]) == set(seed["heldout"]) == set(seed["input"]["demo"]) == weathers
    assert seed["demo"]["overall"] == pytest.approx(sum(v for k, v in seed["demo"].items() if k != "overall") / 5)
    assert saved["paired"]["half - none"]["seeds"] == [0, 1]
    assert saved["complete"] is True and saved["half_clears_2db"] is False  # 2 steps gain nothing like 2 dB
    diff = saved["paired"]["half - none"]["heldout"]["psnr_y"]["overall"]
    by_seed = [saved["variants"]["half"]["seeds"][s]["heldout"]["overall"]
               - saved["variants"]["none"]["seeds"][s]["heldout"]["overall"] for s in ("0", "1")]
    assert diff["per_seed"] == pytest.approx(by_seed) and diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    blocks = seed["probe"]["blocks"]
    assert all(0 <= b["kernels"] <= 1 for b in blocks.values())
    assert all(b["kernels"] is None for b in saved["variants"]["none"]["seeds"]["0"]["probe"]["blocks"].values())
    assert (tmp_path / "ablation.png").stat().st_size > 10_000

    last = tmp_path / "runs" / "half-s0-2" / "last.pt"
    stamp = last.stat().st_mtime_ns
    again = ablation.main(argv)
    assert last.stat().st_mtime_ns == stamp  # nothing retrained
    assert again["paired"] == payload["paired"]


def test_a_larger_budget_continues_the_largest_smaller_run_of_the_same_variant_and_seed(tmp_path):
    for name in ("half-s0-2000", "half-s0-4000", "half-s0-8000", "half-s0-100", "half-s1-5000", "none-s0-5000",
                 "half-s0", "half-s0-4500"):
        (tmp_path / name).mkdir()
        if name != "half-s0-4500":  # a directory without last.pt holds nothing to continue
            (tmp_path / name / "last.pt").write_bytes(b"")
    assert ablation.shorter_run(tmp_path, "half", 0, 6000) == tmp_path / "half-s0-4000"
    assert ablation.shorter_run(tmp_path, "half", 0, 4000) == tmp_path / "half-s0-2000"
    assert ablation.shorter_run(tmp_path, "half", 0, 2000) is None  # 100 steps warm up over 99: another schedule
    assert ablation.shorter_run(tmp_path, "none", 0, 6000) == tmp_path / "none-s0-5000"
    assert ablation.shorter_run(tmp_path, "none-matched", 0, 6000) is None
