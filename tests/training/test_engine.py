"""The shared training loop: exact resume, DDP == one process, NaN stop, run directory, sampler."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from dwgn import build_model
from dwgn.training.checkpoint import load_checkpoint
from dwgn.training.config import ConfigError, FinetuneConfig
from dwgn.training.engine import Stage, StageHooks, StepSampler, TrainingError, cosine_lr, train


class NoisyPairs(Dataset):
    """Generated pairs obeying the (index, seed) interface: a fixed clean image per index, a crop
    position and noise drawn from the sample seed."""

    def __init__(self, n: int = 6, size: int = 64):
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        index, seed = item[:2] if isinstance(item, tuple) else (item, item)
        base = np.random.default_rng(1000 + index).random((3, self.size + 8, self.size + 8), dtype=np.float32)
        rng = np.random.default_rng(seed)
        top, left = rng.integers(0, 9, size=2)
        clean = base[:, top:top + self.size, left:left + self.size]
        noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape, dtype=np.float32), 0, 1)
        return torch.from_numpy(noisy), torch.from_numpy(np.ascontiguousarray(clean))


class Killed(Exception):
    """Stands in for a kill -9 between checkpoints."""


class CountingHooks(StageHooks):
    """Extra checkpointed state (like Stage 1's generators) and an optional simulated kill."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at, self.count = kill_at, torch.zeros(())

    def after_step(self, step, model, inputs, targets):
        if step == self.kill_at:
            raise Killed()
        self.count += 1
        return {"count": float(self.count)}

    def state_dict(self):
        return {"generators": {"count": self.count.clone()}}

    def load_state_dict(self, ckpt, path):
        self.count = ckpt["generators"]["count"].clone()


def config(out: Path, **kw) -> FinetuneConfig:
    base = dict(steps=3, batch_size=1, crop=64, num_workers=0, log_every=1, save_every=1, val_every=0,
                device="cpu", out=str(out), from_scratch=True)
    base.update(kw)
    return FinetuneConfig(**base)


def stage(hooks: StageHooks | None = None, val: bool = False, n: int = 6) -> Stage:
    torch.manual_seed(0)
    return Stage("finetune", build_model("tiny"), NoisyPairs(n), NoisyPairs(2) if val else None,
                 hooks=hooks or StageHooks())


def test_sampler_is_deterministic_covers_epochs_and_splits_over_ranks(assert_mentions):
    one = StepSampler(n=5, global_batch=4, seed=7, start=0, steps=5)
    ranks = [StepSampler(n=5, global_batch=4, seed=7, start=0, steps=5, rank=r, world=2) for r in range(2)]
    for step in range(5):
        assert ranks[0].items(step) + ranks[1].items(step) == one.items(step)
    flat = [item[0] for items in one for item in items]  # 20 positions = 4 epochs of 5
    for e in range(4):
        assert sorted(flat[5 * e:5 * e + 5]) == [0, 1, 2, 3, 4]
    assert StepSampler(5, 4, 7, start=3, steps=5).items(3) == one.items(3)  # resuming mid-way
    seeds = [item[1] for items in one for item in items]
    assert len(set(seeds)) == len(seeds)
    step_seeds = [{item[2] for item in items} for items in one]  # one per step, shared by its samples and ranks
    assert all(len(s) == 1 for s in step_seeds) and len(set.union(*step_seeds)) == 5
    assert {item[2] for item in ranks[1].items(2)} == step_seeds[2]
    assert StepSampler(5, 4, 8, 0, 5).items(0) != one.items(0)
    with pytest.raises(ValueError) as info:
        StepSampler(5, 4, 7, 0, 5, rank=0, world=3)
    assert_mentions(str(info.value), "batch_size", "4", "3")


def test_cosine_schedule_ends_at_lr_min():
    cfg = FinetuneConfig(steps=10, lr=2e-4, lr_min=1e-6)
    assert cosine_lr(0, cfg) == pytest.approx(2e-4)
    assert cosine_lr(5, cfg) == pytest.approx((2e-4 + 1e-6) / 2)
    assert cosine_lr(10, cfg) == pytest.approx(1e-6)


def test_warmup_rises_linearly_then_the_cosine_runs_over_the_remaining_steps(assert_mentions):
    cfg = FinetuneConfig(steps=14, lr=2e-4, lr_min=1e-6, warmup_steps=4)
    assert [cosine_lr(k, cfg) for k in range(4)] == pytest.approx([5e-5, 1e-4, 1.5e-4, 2e-4])
    assert cosine_lr(4, cfg) == pytest.approx(2e-4)
    assert cosine_lr(9, cfg) == pytest.approx((2e-4 + 1e-6) / 2)  # half way through the 10 cosine steps
    assert cosine_lr(14, cfg) == pytest.approx(1e-6)
    with pytest.raises(ConfigError) as info:
        FinetuneConfig(steps=4, warmup_steps=4).validate()
    assert_mentions(str(info.value), "warmup_steps", "steps", "4")


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full = train(config(tmp_path / "full"), stage(CountingHooks()))
    assert full.step == 3
    with pytest.raises(Killed):  # dies during step index 2, after last.pt of step 2 was written
        train(config(tmp_path / "cut"), stage(CountingHooks(kill_at=2)))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 2
    hooks = CountingHooks()
    resumed = train(config(tmp_path / "cut", num_workers=2), stage(hooks))  # workers must not matter
    assert resumed.step == 3 and float(hooks.count) == 3
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "cut"))
    assert a["step"] == b["step"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in pa:
            assert torch.equal(pa[k], pb[k]), k
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] == cosine_lr(2, config(tmp_path))
    assert torch.equal(a["generators"]["count"], b["generators"]["count"])
    lines = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]


def test_finished_run_says_so_and_a_larger_steps_extends_it(tmp_path, capsys):
    train(config(tmp_path, steps=1), stage())
    again = train(config(tmp_path, steps=1), stage())
    assert again.already_finished and again.step == 1
    assert "already finished (1 of 1 steps)" in capsys.readouterr().out
    extended = train(config(tmp_path, steps=2), stage())
    assert extended.step == 2 and not extended.already_finished
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2


def test_run_directory_logs_and_checkpoint_keys(tmp_path):
    result = train(config(tmp_path, steps=2, val_every=1, ema_decay=0.9), stage(val=True))
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "log.jsonl", "last.pt", "best.pt"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if "loss" in x]
    val_lines = [x for x in lines if "val_psnr" in x]
    assert [x["step"] for x in train_lines] == [1, 2] and all({"lr", "images_per_s"} <= set(x) for x in train_lines)
    assert [x["step"] for x in val_lines] == [0, 1, 2]  # step 0: the starting weights
    assert result.best_val_psnr == max(x["val_psnr"] for x in val_lines[1:])
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert {"format_version", "model", "model_ema", "config", "step", "optimizer", "scaler", "rng"} <= set(last)
    assert "scheduler" not in last  # the learning rate is cosine_lr(step, config): nothing to save or restore
    assert "optimizer" not in best and best["val_psnr"] == result.best_val_psnr
    assert last["config"]["model"]["width"] == 16
    assert any(not torch.equal(last["model"][k], last["model_ema"][k]) for k in last["model"])


def test_keep_every_keeps_the_users_weights_of_those_steps_and_resuming_keeps_them(tmp_path, assert_mentions):
    train(config(tmp_path / "kept", steps=5, ema_decay=0.5, keep_every=2), stage())
    snaps = tmp_path / "kept" / "snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == ["step-000002.safetensors", "step-000004.safetensors"]
    for step in (2, 4):  # the same run killed after that step: its EMA weights, not the raw ones
        with pytest.raises(Killed):
            train(config(tmp_path / f"ref{step}", steps=5, ema_decay=0.5), stage(CountingHooks(kill_at=step)))
        last = load_checkpoint(tmp_path / f"ref{step}" / "last.pt")
        assert last["step"] == step
        snap = load_checkpoint(snaps / f"step-{step:06d}.safetensors")
        assert snap["step"] == step and "optimizer" not in snap and snap["config"]["keep_every"] == 2
        assert snap["config"]["model"] == json.loads(json.dumps(last["config"]["model"]))  # JSON metadata
        assert set(snap["model"]) == set(last["model_ema"])
        for k in last["model"]:
            assert snap["model"][k].dtype == torch.float32, k
            assert torch.equal(snap["model"][k], last["model_ema"][k]), k
        assert any(not torch.equal(snap["model"][k], last["model"][k]) for k in last["model"])
    before = (snaps / "step-000004.safetensors").read_bytes()
    extended = train(config(tmp_path / "kept", steps=6, ema_decay=0.5, keep_every=3), stage())  # a free key
    assert extended.step == 6
    assert sorted(p.name for p in snaps.iterdir()) == ["step-000002.safetensors", "step-000004.safetensors",
                                                        "step-000006.safetensors"]
    assert (snaps / "step-000004.safetensors").read_bytes() == before
    model = build_model("tiny")
    model.load_state_dict(load_checkpoint(snaps / "step-000006.safetensors")["model"])  # a release like any other
    train(config(tmp_path / "none", steps=2), stage())
    assert not (tmp_path / "none" / "snapshots").exists()
    with pytest.raises(ConfigError) as info:
        config(tmp_path, keep_every=-1).validate()
    assert_mentions(str(info.value), "keep_every", "-1", "0")


class PoisonHooks(StageHooks):
    def prepare(self, batch, step):
        inputs, targets = super().prepare(batch, step)
        return (inputs * float("nan") if step == 2 else inputs), targets


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, assert_mentions):
    with pytest.raises(TrainingError) as info:
        train(config(tmp_path, steps=4), stage(PoisonHooks()))
    assert_mentions(str(info.value), "nan", "step 2", str(tmp_path / "last.pt"), "--lr", "--grad-clip")
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 2
    assert all(torch.isfinite(v).all() for v in last["model"].values())


class TensorScalarHooks(StageHooks):
    """Returns its scalar as a 0-d tensor (as Stage 1 does, to keep it on the GPU) and a float next to it."""

    def after_step(self, step, model, inputs, targets):
        return {"as_tensor": torch.tensor(float(step)), "as_float": 2.0 * step}


def test_losses_are_read_only_at_log_validation_and_save_steps(tmp_path, monkeypatch):
    """The host reads the step losses in one transfer per log/validation/save step, not once per step;
    the logged means (the loss and a stage's tensor scalars) are those of every step since the last line."""
    from dwgn.training import engine

    reads, losses = [], []
    real_check, real_loss = engine.checked_losses, engine.l1_step_loss

    def checked_losses(pending, first, last_path):
        reads.append((first, len(pending)))
        return real_check(pending, first, last_path)

    def l1_step_loss(*args):
        losses.append(real_loss(*args))
        return losses[-1]

    monkeypatch.setattr(engine, "checked_losses", checked_losses)
    monkeypatch.setattr(engine, "l1_step_loss", l1_step_loss)
    train(config(tmp_path, steps=7, log_every=3, save_every=5), stage(TensorScalarHooks()))
    assert reads == [(0, 3), (3, 2), (5, 1), (6, 1)]  # log 3, save 5, log 6, the end 7
    losses = [float(loss.detach()) for loss in losses]
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6, 7]
    assert [x["loss"] for x in lines] == pytest.approx([np.mean(losses[:3]), np.mean(losses[3:6]), losses[6]])
    assert [x["as_tensor"] for x in lines] == pytest.approx([1.0, 4.0, 6.0])
    assert [x["as_float"] for x in lines] == pytest.approx([2.0, 8.0, 12.0])


def test_nan_between_checks_is_named_by_its_own_step_and_never_saved(tmp_path, assert_mentions):
    """The loss of step 2 is read only at step 4 (a save step): the message still names step 2, and last.pt
    stays the state after step 2, saved before the bad step, not the NaN weights of steps 3-4."""
    with pytest.raises(TrainingError) as info:
        train(config(tmp_path, steps=8, log_every=100, save_every=2), stage(PoisonHooks()))
    assert_mentions(str(info.value), "nan", "step 2", str(tmp_path / "last.pt"), "--lr", "--grad-clip")
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 2
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(config(Path(out), steps=2, batch_size=4), stage())


@pytest.mark.slow  # two spawned interpreters import torch: ~30 s on a shared 2-core machine
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    train(config(tmp_path / "one", steps=2, batch_size=4), stage())
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("ddp", "one"))
    assert a["step"] == b["step"] == 2
    moved = 0
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=2e-6, msg=k)
        moved += int(not torch.equal(b["model"][k], stage().model.state_dict()[k]))
    assert moved > 0  # the comparison is between trained weights, not two copies of the init


# ------------------------------------------------------- Stage 2 (train.py = dwgn.training.finetuning.main)


def pair_folder(root: Path, n: int = 3, size: int = 72) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("input", "gt"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        clean = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        rain = np.clip(clean.astype(int) + rng.integers(0, 60, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(rain).save(root / "input" / f"{i}.png")
        Image.fromarray(clean).save(root / "gt" / f"{i}.png")
    return root


def pretrained_checkpoint(path: Path, **overrides) -> dict:
    from dwgn.training.checkpoint import FORMAT_VERSION, save_checkpoint
    from dwgn.training.cli import config_to_dict
    from dwgn.training.pretraining import PretrainingConfig

    torch.manual_seed(123)
    model = build_model("tiny", **overrides)
    cfg = PretrainingConfig()
    cfg.model = model.config
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"format_version": FORMAT_VERSION, "model": state, "model_ema": None,
                           "config": config_to_dict(cfg), "step": 7})
    return state


def test_train_py_without_pretrained_weights_names_both_ways_on(tmp_path, monkeypatch, capsys, run_cli,
                                                                assert_mentions):
    from dwgn.training.finetuning import main

    monkeypatch.chdir(tmp_path)
    assert run_cli(main, ["--steps", "1"], "train.py") == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and err.count("\n") == 1
    assert_mentions(err, "runs/pretrain-tiny/last.pt", "python pre-training.py --preset tiny", "--from-scratch",
                    "--init")
    assert not (tmp_path / "runs" / "finetune-tiny").exists()


def test_train_py_refuses_pretrained_weights_of_another_architecture(tmp_path, capsys, run_cli):
    from dwgn.training.finetuning import main

    pretrained_checkpoint(tmp_path / "pre.pt", dynamic="none")
    code = run_cli(main, ["--data", str(pair_folder(tmp_path / "pairs")), "--init", str(tmp_path / "pre.pt"),
                          "--out", str(tmp_path / "run"), "--val-data", "none", "--num-workers", "0"], "train.py")
    assert code == 2
    assert "another architecture (dynamic: checkpoint 'none' vs model 'half')" in capsys.readouterr().err


def test_train_py_starts_from_the_pretrained_weights_and_validates(tmp_path, capsys):
    from dwgn.training.finetuning import main

    init = pretrained_checkpoint(tmp_path / "pre.pt")
    pairs = pair_folder(tmp_path / "pairs")
    code = main(["--data", str(pairs), "--init", str(tmp_path / "pre.pt"), "--out", str(tmp_path / "run"),
                 "--steps", "1", "--batch-size", "1", "--num-workers", "0", "--val-data", str(pairs),
                 "--val-images", "2", "--val-crop", "64", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"initialised from {tmp_path / 'pre.pt'} (pre-trained 7 steps)" in out
    assert "data: 3 training pairs from" in out and "validation: 2 pairs" in out
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    # one Adam step moves each weight by at most about lr: the run started from the pre-trained weights
    assert max((last["model"][k] - v).abs().max().item() for k, v in init.items()) < 2.5e-4
    assert any(not torch.equal(last["model"][k], v) for k, v in init.items())
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "val_psnr" in x] == [0, 1]
    assert (tmp_path / "run" / "best.pt").exists()


@pytest.mark.slow
def test_python_train_py_runs_end_to_end_on_the_embedded_default(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DWGN_DEMO": str(tmp_path / "demo"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(repo / "train.py"), "--from-scratch", "--steps", "3", "--num-workers", "0",
           "--val-every", "3", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "embedded SYNTHETIC demo set" in done.stdout and "validation: 5 pairs from the demo test sets" in done.stdout
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already finished (3 of 3 steps)" in again.stdout


def test_curves_draw_one_panel_per_kind_of_line(tmp_path, capsys, run_cli):
    from PIL import Image

    from dwgn.training.curves import main, plot_curves

    lines = [{"step": s, "loss": 0.1 / s, "lr": 1e-4, "images_per_s": 3.0} for s in (1, 2, 3)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    two = Image.open(plot_curves(tmp_path, tmp_path / "a.png"))
    with open(tmp_path / "log.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 3, "val_psnr": 25.0}) + "\n")
        fh.write(json.dumps({"step": 4, "loss": 0.02, "lr": 1e-5, "generator_loss": -0.02}) + "\n")
    four = Image.open(plot_curves(tmp_path, tmp_path / "b.png"))
    assert four.size[1] == two.size[1] and four.size[0] == pytest.approx(2 * two.size[0], rel=0.02)
    assert run_cli(main, [tmp_path / "missing"], "python -m dwgn.curves") == 2
    assert capsys.readouterr().err.startswith("python -m dwgn.curves: error: ")
    with open(tmp_path / "log.jsonl", "a") as fh:
        fh.write('{"step": 5, "lo')  # a killed run's torn last line
    assert main([str(tmp_path)]) == 0  # the default output: inside the run directory, never figures/
    assert "dropped the torn last line" in capsys.readouterr().out and (tmp_path / "curves.png").is_file()


def test_curves_title_says_how_far_the_run_got(tmp_path):
    from dwgn.training.curves import curves_title

    run = tmp_path / "finetune-tiny"
    run.mkdir()
    records = [{"step": 190, "loss": 0.1, "lr": 1e-6}, {"step": 200, "val_psnr": 20.9}]
    assert curves_title(run, records) == "finetune-tiny: 200 steps"  # no config.yaml: what the log shows
    (run / "config.yaml").write_text("preset: tiny\nsteps: 400\n")
    assert curves_title(run, records) == "finetune-tiny: step 200 of 400"
    assert curves_title(run, records + [{"step": 400, "loss": 0.09, "lr": 1e-6}]) == "finetune-tiny: 400 steps"


class CtrlCHooks(CountingHooks):
    """Ctrl-C either between steps (in prepare) or half-way through one (after the network's update)."""

    def __init__(self, at: int, where: str):
        super().__init__()
        self.at, self.where = at, where

    def prepare(self, batch, step):
        if self.where == "between" and step == self.at:
            raise KeyboardInterrupt
        return super().prepare(batch, step)

    def after_step(self, step, model, inputs, targets):
        if self.where == "mid" and step == self.at:
            raise KeyboardInterrupt
        return super().after_step(step, model, inputs, targets)


@pytest.mark.parametrize("where, saved_step", [("between", 2), ("mid", 1)])
def test_ctrl_c_saves_only_whole_steps_and_resumes_exactly(tmp_path, where, saved_step):
    full = train(config(tmp_path / "full"), stage(CountingHooks()))
    with pytest.raises(KeyboardInterrupt):  # periodic saves every 10 steps: only the interrupt can save
        train(config(tmp_path / "cut", save_every=10), stage(CtrlCHooks(at=2, where=where)))
    if where == "between":
        assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == saved_step
    else:  # half a step is never saved: no periodic checkpoint exists yet, so nothing is written
        assert not (tmp_path / "cut" / "last.pt").exists()
    hooks = CountingHooks()
    resumed = train(config(tmp_path / "cut"), stage(hooks))
    assert resumed.step == full.step == 3
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "cut"))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["generators"]["count"], b["generators"]["count"])


def test_host_means_mixes_floats_and_tensors_and_takes_each_keys_mean():
    from dwgn.training.engine import host_means

    got = host_means({"a": [torch.tensor(1.0), 2.0, torch.tensor(6.0, dtype=torch.float64)], "b": [0.5],
                      "c": [torch.zeros(()), torch.tensor([4.0])]})
    assert got == pytest.approx({"a": 3.0, "b": 0.5, "c": 2.0})
    assert host_means({}) == {}


class RecordingHooks(StageHooks):
    """Keeps each step's batch, so that a test can redo the step by hand."""

    def __init__(self):
        self.batches = []

    def prepare(self, batch, step):
        inputs, targets = super().prepare(batch, step)
        self.batches.append((inputs.clone(), targets.clone()))
        return inputs, targets


def test_cpu_amp_runs_the_forward_in_bfloat16_and_the_step_equals_a_reference(tmp_path):
    """`cpu_amp`: one engine step equals a hand-written step (forward under CPU bf16 autocast, L1 in float32, Adam
    at the schedule's rate); without it the same step runs in float32, and the two steps' weights differ."""
    trained = {}
    for cpu_amp in (True, False):
        hooks = RecordingHooks()
        st = stage(hooks)
        start = {k: v.clone() for k, v in st.model.state_dict().items()}
        seen = []
        first_conv = next(m for m in st.model.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
        cfg = config(tmp_path / f"amp-{cpu_amp}", steps=1, lr=1e-3, cpu_amp=cpu_amp)
        train(cfg, st)
        assert seen and set(seen) == {torch.bfloat16 if cpu_amp else torch.float32}
        reference = build_model("tiny")
        reference.load_state_dict(start)
        optimizer = torch.optim.Adam(reference.parameters(), lr=cosine_lr(0, cfg), betas=tuple(cfg.betas))
        inputs, targets = hooks.batches[0]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_amp):
            restored = reference(inputs)
        torch.nn.functional.l1_loss(restored.float(), targets).backward()
        optimizer.step()
        trained[cpu_amp] = load_checkpoint(tmp_path / f"amp-{cpu_amp}" / "last.pt")["model"]
        for k, v in reference.state_dict().items():
            assert torch.allclose(trained[cpu_amp][k], v, atol=1e-6, rtol=0), (cpu_amp, k)
    assert any(not torch.allclose(trained[True][k], trained[False][k], atol=1e-6, rtol=0) for k in trained[True])


def test_cpu_amp_needs_amp_bf16(assert_mentions):
    with pytest.raises(ConfigError) as info:
        FinetuneConfig(cpu_amp=True, amp="fp16").validate()
    assert_mentions(str(info.value), "cpu_amp", "fp16", "--cpu-amp", "--amp bf16")
    FinetuneConfig(cpu_amp=True).validate()
