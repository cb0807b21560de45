"""Checkpoints: atomic writes, weights_only loads with clear errors, architecture refusal, EMA preference."""
from __future__ import annotations

import pytest
import torch

from dwgn.training.checkpoint import (FORMAT_VERSION, CheckpointError, load_checkpoint, load_model, load_weights,
                             save_checkpoint)
from dwgn.training.config import FinetuneConfig
from dwgn.training.cli import config_to_dict
from dwgn.models.network import build_model


class Payload:
    """An arbitrary object: unpickling it would import and run this module's code."""


def tiny_checkpoint(model, **extra) -> dict:
    cfg = FinetuneConfig()
    cfg.model = model.config
    return {"format_version": FORMAT_VERSION, "model": model.state_dict(), "model_ema": None,
            "config": config_to_dict(cfg), "step": 5, **extra}


def test_atomic_save_overwrites_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "last.pt"
    save_checkpoint(path, {"format_version": FORMAT_VERSION, "model": {}, "config": {}, "step": 1})
    save_checkpoint(path, {"format_version": FORMAT_VERSION, "model": {"w": torch.ones(2)}, "config": {}, "step": 2})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 2 and torch.equal(ckpt["model"]["w"], torch.ones(2))


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format_version": FORMAT_VERSION, "model": {}, "config": {}, "step": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"format_version": FORMAT_VERSION, "model": lambda: 0, "config": {}, "step": 2})
    assert load_checkpoint(path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_load_errors_name_the_file_and_the_problem(tmp_path, assert_mentions):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert_mentions(str(info.value), str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "junk.pt")
    assert_mentions(str(info.value), str(tmp_path / "junk.pt"))
    torch.save({"format_version": FORMAT_VERSION, "model": Payload(), "config": {}, "step": 0},
               tmp_path / "code.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "code.pt")
    assert_mentions(str(info.value), str(tmp_path / "code.pt"), "weights_only=True")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "other.pt")
    assert_mentions(str(info.value), str(tmp_path / "other.pt"), "['format_version', 'config', 'step']")
    torch.save({"format_version": 99, "model": {}, "config": {}, "step": 0}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_another_architecture_is_refused_naming_the_fields(tmp_path, assert_mentions):
    save_checkpoint(tmp_path / "tiny.pt", tiny_checkpoint(build_model("tiny")))
    other = build_model("tiny", dynamic="none", middle_blocks=2)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_weights(other, tmp_path / "tiny.pt")
    assert_mentions(str(info.value), str(tmp_path / "tiny.pt"), "middle_blocks", "1", "2", "dynamic", "'half'",
                    "'none'", "--preset", "--model.")
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_load_model_rebuilds_from_the_checkpoint_and_prefers_ema(tmp_path):
    torch.manual_seed(0)
    model, ema = build_model("tiny"), build_model("tiny")
    save_checkpoint(tmp_path / "a.pt", tiny_checkpoint(model, model_ema=ema.state_dict()))
    loaded = load_model(tmp_path / "a.pt")
    assert not loaded.training and loaded.config == model.config
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ema.state_dict()[k])
    target = build_model("tiny")
    load_weights(target, tmp_path / "a.pt", prefer_ema=False)
    for k, v in target.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
