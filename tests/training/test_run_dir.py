"""A run directory means one config; saved state is restored; EMA, NaN stop and clipping each do their job."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dwgn import build_model
from dwgn.training.checkpoint import CheckpointError, load_checkpoint
from dwgn.training.config import ConfigError
from dwgn.training.engine import Stage, StageHooks, TrainingError, cosine_lr, train, update_ema, validation_psnr
from test_engine import Killed, NoisyPairs, RecordingHooks, config, stage


# ---------------------------------------------------------------- one config per run directory


def test_another_config_is_refused_naming_the_keys_and_both_ways_on(tmp_path, assert_mentions):
    run = tmp_path / "run"
    train(config(run, steps=1), stage())
    with pytest.raises(ConfigError) as refused:
        train(config(run, steps=2, lr=1e-3, from_scratch=False), stage())
    message = str(refused.value)
    assert "lr: 0.0002 -> 0.001" in message and "from_scratch: True -> False" in message
    assert "--out NEW_DIR" in message and "--restart" in message
    # keys about where and how often may change: the run resumes
    assert train(config(run, steps=2, num_workers=1, log_every=5, save_every=2), stage()).step == 2
    # fewer steps than the run already has is refused, not silently "finished"
    with pytest.raises(ConfigError) as info:
        train(config(run, steps=1), stage())
    assert_mentions(str(info.value), str(run), "--steps 1", "--steps 2", "--out NEW_DIR", "--restart")


def test_a_model_key_change_is_refused_and_a_stage_model_of_another_architecture_too(tmp_path, assert_mentions):
    run = tmp_path / "run"
    train(config(run, steps=1), stage())
    other = config(run, steps=2)
    other.model.dynamic = "none"
    with pytest.raises(ConfigError) as info:
        train(other, stage())
    assert_mentions(str(info.value), "model.dynamic", "'half'", "'none'", "--restart")
    torch.manual_seed(0)  # same config, but the stage hands over a network of another architecture
    odd = Stage("finetune", build_model("tiny", dynamic="none"), NoisyPairs(6))
    with pytest.raises(CheckpointError) as info:
        train(config(run, steps=2), odd)
    assert_mentions(str(info.value), str(run / "last.pt"), "dynamic", "'half'", "'none'", "--preset", "--model.")


def test_a_run_stored_with_the_flat_synth_keys_resumes_and_a_synth_change_is_refused(tmp_path, assert_mentions):
    """last.pt of a run written before the synth group holds online_weather, clean_share, ... at the top level
    (and self_feed_share): it resumes under the same config in today's shape; a changed synth key is named;
    a run that trained with self_feed_share (removed since) is another config."""
    from dwgn.training.checkpoint import save_checkpoint
    from dwgn.training.config import SynthConfig
    from dwgn.training.cli import config_to_dict

    from test_config import flat_synth

    run = tmp_path / "run"
    synth = SynthConfig(online=True, clean_share=0.3, weather_weights=(2.0, 1.0, 1.0, 1.0, 1.0))
    train(config(run, steps=1, synth=synth), stage())
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["config"]["synth"] == config_to_dict(synth)
    ckpt["config"] = flat_synth(ckpt["config"])
    save_checkpoint(run / "last.pt", ckpt)
    assert train(config(run, steps=2, synth=synth), stage()).step == 2
    other = SynthConfig(online=True, clean_share=0.4, weather_weights=(2.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ConfigError) as info:
        train(config(run, steps=3, synth=other), stage())
    assert_mentions(str(info.value), "synth.clean_share", "0.3", "0.4")
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["config"] = flat_synth(ckpt["config"], self_feed_share=0.5)
    save_checkpoint(run / "last.pt", ckpt)
    with pytest.raises(ConfigError) as info:
        train(config(run, steps=3, synth=synth), stage())
    assert_mentions(str(info.value), "self_feed_share", "0.5", "'<absent>'", "--restart")


def test_restart_keeps_the_old_run_under_a_dated_name_and_starts_over(tmp_path, capsys):
    run = tmp_path / "run"
    train(config(run, steps=2), stage())
    old_last = (run / "last.pt").read_bytes()
    result = train(config(run, steps=1, lr=1e-3, restart=True), stage())
    assert result.step == 1 and load_checkpoint(run / "last.pt")["step"] == 1
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.")]
    assert len(kept) == 1 and (kept[0] / "last.pt").read_bytes() == old_last
    assert f"moved the old run to {kept[0]}" in capsys.readouterr().out


def test_train_py_with_another_from_scratch_is_refused_with_exit_2(tmp_path, capsys, run_cli):
    from dwgn.training.finetuning import main

    from test_engine import pair_folder, pretrained_checkpoint

    pretrained_checkpoint(tmp_path / "pre.pt")
    args = ["--data", pair_folder(tmp_path / "pairs"), "--out", tmp_path / "run", "--steps", "1", "--batch-size", "1",
            "--num-workers", "0", "--val-data", "none", "--device", "cpu"]
    assert run_cli(main, args + ["--init", tmp_path / "pre.pt"], "train.py") == 0
    capsys.readouterr()
    assert run_cli(main, args + ["--from-scratch", "--steps", "5"], "train.py") == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and "from_scratch: False -> True" in err and "init:" in err


# ---------------------------------------------------------------- validation on the user's own data


def test_own_data_validates_on_a_held_out_part_never_the_demo_set(tmp_path, assert_mentions):
    from dwgn.training.config import FinetuneConfig
    from dwgn.training.finetuning import split_data

    from test_engine import pair_folder

    data = pair_folder(tmp_path / "pairs", n=6)
    cfg = FinetuneConfig(data=str(data), val_images=2, seed=3)
    pairs, val, source = split_data(cfg)
    assert len(pairs) == 4 and len(val) == 2 and not set(pairs) & set(val)
    assert {p[0].name for p in pairs + val} == {f"{i}.png" for i in range(6)}
    assert all(data in inp.parents for inp, _ in val) and source.startswith(f"held out of {data}")
    assert split_data(cfg)[1] == val  # the same pairs every time (resume, reruns)
    with pytest.raises(ValueError) as info:
        split_data(FinetuneConfig(data=str(pair_folder(tmp_path / "one", n=1))))
    assert_mentions(str(info.value), "--data", "1 pair", "--val-data DIR", "--val-data none")


# ---------------------------------------------------------------- saved state is restored


class RandomHooks(StageHooks):
    """Uses Python's and NumPy's global RNGs (as a stage might) and logs what it drew."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at = kill_at

    def after_step(self, step, model, inputs, targets):
        if step == self.kill_at:
            raise Killed()
        return {"python": random.random(), "numpy": float(np.random.random())}


def _draws(run: Path) -> dict[int, tuple[float, float]]:
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return {x["step"]: (x["python"], x["numpy"]) for x in lines if "python" in x}


def test_resume_restores_python_and_numpy_rng_state(tmp_path):
    random.seed(0), np.random.seed(0)
    train(config(tmp_path / "full"), stage(RandomHooks()))
    random.seed(0), np.random.seed(0)
    with pytest.raises(Killed):
        train(config(tmp_path / "cut"), stage(RandomHooks(kill_at=2)))
    random.seed(0), np.random.seed(0)  # a fresh process would start from some other state
    train(config(tmp_path / "cut"), stage(RandomHooks()))
    assert _draws(tmp_path / "cut") == _draws(tmp_path / "full")


def test_a_torn_last_log_line_is_dropped_with_a_note(tmp_path, capsys, assert_mentions):
    run = tmp_path / "run"
    train(config(run, steps=2), stage())
    with open(run / "log.jsonl", "a") as fh:
        fh.write('{"step": 3, "loss": 0.0')  # killed while writing
    train(config(run, steps=3), stage())
    assert "dropped the torn last line 3" in capsys.readouterr().out
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError) as info:
        train(config(run, steps=4), stage())
    assert_mentions(str(info.value), str(run / "log.jsonl"), "line 2")


# ---------------------------------------------------------------- EMA


def test_update_ema_follows_its_equation():
    torch.manual_seed(0)
    model, ema = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    for p in list(model.parameters()) + list(ema.parameters()):
        p.data.normal_()
    model.running_mean.normal_()
    expected = [0.9 * e + 0.1 * p for e, p in zip(ema.parameters(), model.parameters())]
    update_ema(ema, model, 0.9)
    for e, want in zip(ema.parameters(), expected):
        torch.testing.assert_close(e, want, rtol=0, atol=1e-7)
    assert torch.equal(ema.running_mean, model.running_mean)  # buffers are copied


def test_validation_and_best_pt_use_the_ema_weights(tmp_path):
    result = train(config(tmp_path, steps=2, val_every=1, ema_decay=0.5), stage(val=True))
    best = load_checkpoint(tmp_path / "best.pt")
    net = build_model("tiny")
    net.load_state_dict(best["model_ema"])
    assert best["val_psnr"] == validation_psnr(net, NoisyPairs(2), torch.device("cpu")) == result.best_val_psnr
    net.load_state_dict(best["model"])
    assert validation_psnr(net, NoisyPairs(2), torch.device("cpu")) != best["val_psnr"]


def test_resume_continues_the_ema_from_last_pt(tmp_path):
    train(config(tmp_path / "full", ema_decay=0.5), stage())
    with pytest.raises(Killed):
        from test_engine import CountingHooks
        train(config(tmp_path / "cut", ema_decay=0.5), stage(CountingHooks(kill_at=2)))
    train(config(tmp_path / "cut", ema_decay=0.5), stage())
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model_ema"] for d in ("full", "cut"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- NaN stop, clipping


class PoisonWeights(StageHooks):
    def after_step(self, step, model, inputs, targets):
        if step == 1:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("inf")
        return {}


def test_non_finite_weights_stop_before_they_are_saved(tmp_path, assert_mentions):
    with pytest.raises(TrainingError) as info:
        train(config(tmp_path, steps=4), stage(PoisonWeights()))
    assert_mentions(str(info.value), "NaN/inf", "step 2", str(tmp_path / "last.pt"), "--lr", "--grad-clip")
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values())


def test_a_clipped_engine_step_equals_a_hand_written_one(tmp_path):
    """One step with grad_clip c: the gradient g of the L1 loss scaled to c / |g| (all parameters as one vector)
    when |g| > c, then Adam at the schedule's rate. A clip of 1e-6 brings the gradient down to Adam's eps, so the
    step differs from an unclipped one."""
    hooks = RecordingHooks()
    st = stage(hooks)
    start = {k: v.clone() for k, v in st.model.state_dict().items()}
    cfg = config(tmp_path, steps=1, lr=1e-3, grad_clip=1e-6)
    train(cfg, st)
    reference = build_model("tiny")
    reference.load_state_dict(start)
    inputs, targets = hooks.batches[0]
    torch.nn.functional.l1_loss(reference(inputs), targets).backward()
    params = [p for p in reference.parameters() if p.grad is not None]
    norm = torch.cat([p.grad.flatten() for p in params]).norm()
    assert norm > 1e-6
    for p in params:
        p.grad *= 1e-6 / norm
    torch.optim.Adam(reference.parameters(), lr=cosine_lr(0, cfg), betas=tuple(cfg.betas)).step()
    trained = load_checkpoint(tmp_path / "last.pt")["model"]
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(trained[k], v, rtol=0, atol=1e-7, msg=k)


def test_the_engine_applies_grad_clip(tmp_path):
    """Adam's first step moves each weight by about lr whatever the gradient's size, unless clipping
    shrinks the gradient to the order of Adam's eps (1e-8): then the step is far smaller."""
    init = {k: v.clone() for k, v in stage().model.state_dict().items()}
    moved = {}
    for clip in (0.0, 1e-12):
        train(config(tmp_path / str(clip), steps=1, grad_clip=clip), stage())
        last = load_checkpoint(tmp_path / str(clip) / "last.pt")["model"]
        moved[clip] = max((last[k] - v).abs().max().item() for k, v in init.items() if v.is_floating_point())
    assert moved[0.0] > 1.5e-4 and moved[1e-12] < 2e-5
