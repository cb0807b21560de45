"""Releases: `python -m dwgn.export` to .safetensors (config in the metadata, SHA-256 printed) and .pt;
`load_model` and `test.py --checkpoint` read both. The ONNX export is tested in tests/test_onnx.py."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from dwgn.evaluation import evaluate
from dwgn.export import export, main, run
from dwgn.models.network import build_model
from dwgn.training.checkpoint import (FORMAT_VERSION, SAFETENSORS_METADATA_KEY, CheckpointError,
                                      load_checkpoint, load_model, save_checkpoint)
from dwgn.training.config import FinetuneConfig
from dwgn.training.cli import config_to_dict


def _tiny_checkpoint(path, seed, step, **model_overrides):
    """A Stage-2-like checkpoint of `tiny` with raw and EMA weights and optimizer state; returns the EMA network."""
    torch.manual_seed(seed)
    raw, ema = build_model("tiny", **model_overrides), build_model("tiny", **model_overrides)
    cfg = FinetuneConfig()
    cfg.model = raw.config
    save_checkpoint(path, {"format_version": FORMAT_VERSION, "model": raw.state_dict(), "model_ema": ema.state_dict(),
                           "config": config_to_dict(cfg), "step": step, "optimizer": {"state": {}}})
    return ema


@pytest.fixture
def training_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    return path, _tiny_checkpoint(path, seed=0, step=7)


def _equal_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_release_holds_the_ema_weights_and_the_config_in_its_metadata(training_checkpoint, tmp_path):
    src, ema = training_checkpoint
    dst = tmp_path / "release.safetensors"
    export(src, dst, torch.float32, note="synthetic demo")
    with safe_open(dst, framework="pt") as fh:
        meta = json.loads(fh.metadata()[SAFETENSORS_METADATA_KEY])
        names = set(fh.keys())
    assert meta["config"]["model"]["width"] == 16 and meta["step"] == 7 and meta["note"] == "synthetic demo"
    assert meta["format_version"] == FORMAT_VERSION and "optimizer" not in meta
    assert names == set(ema.state_dict())
    model = load_model(dst)  # rebuilt from the metadata alone
    assert model.config == ema.config and _equal_weights(model, ema) and not model.training


def test_float16_release_loads_as_the_rounded_float32_weights(training_checkpoint, tmp_path):
    src, ema = training_checkpoint
    export(src, tmp_path / "half.safetensors", torch.float16)
    export(src, tmp_path / "half.pt", torch.float16)
    from_st, from_pt = load_model(tmp_path / "half.safetensors"), load_model(tmp_path / "half.pt")
    assert _equal_weights(from_st, from_pt)
    w = from_st.state_dict()["stem.weight"]
    assert w.dtype == torch.float32 and torch.equal(w, ema.state_dict()["stem.weight"].half().float())


def test_release_bytes_do_not_change_between_exports(training_checkpoint, tmp_path):
    src, _ = training_checkpoint
    export(src, tmp_path / "a" / "m.safetensors")
    export(src, tmp_path / "b" / "m.safetensors")
    assert (tmp_path / "a" / "m.safetensors").read_bytes() == (tmp_path / "b" / "m.safetensors").read_bytes()


def test_cli_prints_the_sha256_of_the_file_it_wrote(training_checkpoint, tmp_path, capsys):
    src, _ = training_checkpoint
    dst = tmp_path / "m.safetensors"
    assert main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {hashlib.sha256(dst.read_bytes()).hexdigest()}" in out and "step 7, float16" in out


def test_training_state_cannot_go_in_a_safetensors_file(training_checkpoint, tmp_path):
    src, _ = training_checkpoint
    with pytest.raises(CheckpointError, match="keep training checkpoints as .pt"):
        save_checkpoint(tmp_path / "last.safetensors", load_checkpoint(src))
    assert list(tmp_path.glob("*.safetensors")) == [] and list(tmp_path.glob(".*")) == []


def test_unreadable_safetensors_is_a_checkpoint_error(training_checkpoint, tmp_path):
    src, _ = training_checkpoint
    dst = tmp_path / "m.safetensors"
    export(src, dst)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(dst.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors cannot be read as safetensors"):
        load_checkpoint(cut)
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.safetensors cannot be read"):
        load_checkpoint(tmp_path / "text.safetensors")


@pytest.mark.parametrize("argv, message", [
    (["missing.pt", "out.safetensors"], "error: checkpoint missing.pt not found"),
    (["{src}", "out.bin"], "error: release out.bin: name it *.safetensors"),
])
def test_cli_user_errors_are_one_line_and_exit_2(training_checkpoint, capsys, argv, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    src, _ = training_checkpoint
    with pytest.raises(SystemExit) as exit_info:
        run([a.format(src=src) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_test_py_restores_with_either_format_identically(training_checkpoint, tmp_path):
    src, _ = training_checkpoint
    export(src, tmp_path / "m.safetensors")
    export(src, tmp_path / "m.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(photos / "p.png")
    outputs = []
    for name in ("m.safetensors", "m.pt"):
        summary = evaluate.run(["--checkpoint", str(tmp_path / name), "--input", str(photos), "--device", "cpu",
                                "--results", str(tmp_path / name.replace(".", "_"))])
        (written,) = summary["restored"]
        outputs.append(np.asarray(Image.open(written)))
    assert outputs[0].shape == (40, 70, 3) and np.array_equal(outputs[0], outputs[1])


def test_a_release_with_an_old_inference_record_loads_and_runs_the_network_once(training_checkpoint, tmp_path,
                                                                                 capsys):
    """Releases exported with `--passes N --pass-gate DB` (up to commit 6836b52) carry an `inference` entry; it is
    ignored: the same weights, one run of the network, and a re-export drops it."""
    src, ema = training_checkpoint
    export(src, tmp_path / "rec.safetensors", torch.float32)
    ckpt = load_checkpoint(tmp_path / "rec.safetensors")
    assert "inference" not in ckpt
    old = tmp_path / "old.safetensors"
    save_checkpoint(old, {**ckpt, "inference": {"passes": 2, "pass_gate": 35.0}})
    for leftover in ({"passes": 0}, [2, 35]):  # malformed records, once refused, load too
        save_checkpoint(tmp_path / "odd.pt", {**ckpt, "inference": leftover})
        assert _equal_weights(load_model(tmp_path / "odd.pt"), ema)
    model = load_model(old)
    assert _equal_weights(model, ema) and not hasattr(model, "recommended_inference")
    img = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        once = ema(x).clamp(0, 1)
        twice = ema(once).clamp(0, 1)
    by_hand = [np.round(v[0].permute(1, 2, 0).numpy() * 255) for v in (once, twice)]
    assert np.abs(by_hand[0] - by_hand[1]).max() > 1  # a second run would show
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(img).save(photos / "p.png")
    evaluate.run(["--checkpoint", str(old), "--input", str(photos), "--results", str(tmp_path / "r")])
    got = np.asarray(Image.open(tmp_path / "r" / "photos" / "p.png")).astype(int)
    assert np.abs(got - by_hand[0]).max() <= 1  # rounding only
    export(old, tmp_path / "new.safetensors", torch.float32)
    assert "inference" not in load_checkpoint(tmp_path / "new.safetensors")
    capsys.readouterr()
    for flag in ("--passes", "--pass-gate"):
        with pytest.raises(SystemExit) as exit_:
            main([str(src), str(tmp_path / "flag.safetensors"), flag, "2"])
        assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_average_release_is_the_linear_mix_of_the_two_ema_weights(tmp_path, capsys):
    a = _tiny_checkpoint(tmp_path / "a.pt", seed=1, step=1).state_dict()
    b = _tiny_checkpoint(tmp_path / "b.pt", seed=2, step=2).state_dict()
    dst = tmp_path / "soup.pt"
    assert main([str(tmp_path / "a.pt"), str(dst), "--average", str(tmp_path / "b.pt"), "--mix", "0.25",
                 "--dtype", "float32"]) == 0
    assert "0.75 x" in capsys.readouterr().out
    release = load_checkpoint(dst)
    assert release["averaged_with"] == str(tmp_path / "b.pt") and release["mix"] == 0.25 and release["step"] == 1
    floats = [k for k in a if a[k].is_floating_point()]
    assert floats and not torch.equal(a[floats[0]], b[floats[0]])
    for key in floats:  # reference: 0.75 a + 0.25 b, written from the definition
        torch.testing.assert_close(release["model"][key], 0.75 * a[key] + 0.25 * b[key], rtol=1e-6, atol=1e-7)
    export(tmp_path / "a.pt", tmp_path / "zero.pt", torch.float32, average=tmp_path / "b.pt", mix=0.0)
    assert all(torch.equal(load_checkpoint(tmp_path / "zero.pt")["model"][k], a[k]) for k in a)


def test_average_refuses_another_architecture_and_a_mix_outside_0_1(tmp_path):
    _tiny_checkpoint(tmp_path / "a.pt", seed=1, step=1)
    _tiny_checkpoint(tmp_path / "wide.pt", seed=2, step=2, width=32)
    with pytest.raises(CheckpointError, match=r"wide\.pt is for another architecture \(.*width"):
        export(tmp_path / "a.pt", tmp_path / "x.pt", average=tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match=r"--mix must be in \[0, 1\].*got 1\.5"):
        export(tmp_path / "a.pt", tmp_path / "x.pt", average=tmp_path / "a.pt", mix=1.5)
    assert not (tmp_path / "x.pt").exists()


def test_the_model_card_matches_the_shipped_release():
    """A retrained release must come with its card: the SHA-256 the card states is the committed file's, and the
    file's note is the one in the card's release command, its last export line (so rerunning it gives the same
    bytes)."""
    root = Path(__file__).resolve().parents[1]
    release = root / "checkpoints" / "dwgn-small-demo.safetensors"
    card = (root / "checkpoints" / "MODEL_CARD.md").read_text()
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    assert f"SHA-256 of the committed `.safetensors`: `{digest}`" in card
    with safe_open(str(release), framework="pt") as f:
        meta = json.loads(f.metadata()[SAFETENSORS_METADATA_KEY])
    last_export = card[card.rindex("python -m dwgn.export"):].split("\n```")[0]
    assert f'--note "{meta["note"]}"' in last_export
    assert "checkpoints/dwgn-small-demo.safetensors" in last_export.splitlines()[0]
