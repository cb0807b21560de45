"""`python -m dwgn.convert`: weights saved by the authors' code become our checkpoint, tensor for tensor.

tests/fixtures/authors_paper_state_dict.tsv lists the 1,744 keys and shapes of their paper network; the tests
build authors-style checkpoints from it (random tensors of those shapes) and, to stay fast, from our tiny
network renamed through the inverse table."""
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import dwgn
import paper_reference as ref
from dwgn.convert import main
from dwgn.evaluation.evaluate import load_checkpoint_model
from dwgn.models.authors import RENAMES, to_authors, to_ours
from dwgn.models.network import PRESETS
from dwgn.training.checkpoint import CheckpointError, load_checkpoint, load_weights

TABLE = Path(__file__).resolve().parents[1] / "fixtures" / "authors_paper_state_dict.tsv"


def authors_paper_shapes() -> dict[str, tuple[int, ...]]:
    rows = [line.rstrip("\n").split("\t") for line in TABLE.read_text().splitlines(True) if not line.startswith("#")]
    assert rows[0] == ["key", "shape"]
    return {key: tuple(int(n) for n in shape.split("x")) for key, shape in rows[1:]}


def authors_tiny_state(**overrides) -> dict[str, torch.Tensor]:
    """An authors-style state_dict of a small network: ours, renamed through the inverse table, non-zero."""
    torch.manual_seed(0)
    model = dwgn.build_model("tiny", **overrides)
    return {to_authors(k): torch.randn_like(v) * 0.1 for k, v in model.state_dict().items()}


def run(src, dst, capsys):
    from dwgn.errors import run_main

    with pytest.raises(SystemExit) as done:
        run_main(main, "python -m dwgn.convert", [str(src), str(dst)])
    code = done.value.code
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(src, dst, capsys) -> str:
    code, _, err = run(src, dst, capsys)
    assert code == 2
    assert err.startswith("python -m dwgn.convert: error: ") and err.count("\n") == 1
    assert not Path(dst).exists()  # nothing written
    return err


def test_table_maps_every_paper_key_exactly_once_with_its_shape():
    theirs = authors_paper_shapes()
    assert len(theirs) == 1744
    ours = {k: tuple(v.shape) for k, v in dwgn.build_model("paper").state_dict().items()}
    mapped = {to_ours(k): shape for k, shape in theirs.items()}
    assert len(mapped) == len(theirs) == len(ours)  # one-to-one
    assert mapped == ours  # every key onto one of ours, same shape
    assert all(to_authors(to_ours(k)) == k for k in theirs)
    # every line of the table is used
    for source, target in RENAMES:
        assert any(f".{source}." in f".{k}." for k in theirs), source
        assert any(f".{target}." in f".{k}." for k in ours), target


def test_paper_round_trip_with_optimizer_epoch_and_module_prefix(tmp_path, capsys):
    torch.manual_seed(0)
    theirs = {k: torch.randn(shape) for k, shape in authors_paper_shapes().items()}
    src = tmp_path / "ckpt_epoch_7.pth"
    torch.save({"model": {f"module.{k}": v for k, v in theirs.items()},
                "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                              "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "params": [0]}]},
                "epoch": 7}, src)
    code, out, _ = run(src, tmp_path / "paper.pt", capsys)
    assert code == 0 and "1,744 tensors" in out and "epoch 7" in out and "preset 'paper'" in out
    assert "train.py --preset paper --init" in out
    ckpt = load_checkpoint(tmp_path / "paper.pt")
    assert ckpt["config"]["model"] == asdict(PRESETS["paper"]) and ckpt["step"] == 0
    assert ckpt["converted_from"]["epoch"] == 7
    state = dwgn.load_model(tmp_path / "paper.pt").state_dict()
    assert len(state) == 1744
    assert all(torch.equal(state[to_ours(k)], v) for k, v in theirs.items())


def test_tiny_bare_state_dict_loads_everywhere_and_computes_the_same(tmp_path, capsys):
    theirs = authors_tiny_state()
    torch.save(theirs, tmp_path / "latest.pth")
    code, out, _ = run(tmp_path / "latest.pth", tmp_path / "tiny.pt", capsys)
    assert code == 0 and "preset 'tiny'" in out
    model = dwgn.load_model(tmp_path / "tiny.pt")
    assert all(torch.equal(model.state_dict()[to_ours(k)], v) for k, v in theirs.items())
    reference = dwgn.build_model("tiny").eval()
    reference.load_state_dict({to_ours(k): v for k, v in theirs.items()})
    x = torch.rand(1, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    # test.py --checkpoint and train.py --init go through these two
    assert load_checkpoint_model(tmp_path / "tiny.pt", "cpu").config == model.config
    load_weights(dwgn.build_model("tiny"), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="another architecture"):
        load_weights(dwgn.build_model("paper"), tmp_path / "tiny.pt")


def test_another_width_converts_and_says_which_preset_it_resembles(tmp_path, capsys):
    torch.save({"model": authors_tiny_state(width=48), "epoch": 1}, tmp_path / "wide.pth")
    code, out, _ = run(tmp_path / "wide.pth", tmp_path / "wide.pt", capsys)
    assert code == 0 and "resembles 'tiny' except width 48 vs 16" in out
    assert dwgn.load_model(tmp_path / "wide.pt").config == replace(PRESETS["tiny"], width=48)
    torch.save({"model": authors_tiny_state(width=32), "epoch": 1}, tmp_path / "small.pth")
    code, out, _ = run(tmp_path / "small.pth", tmp_path / "small.pt", capsys)
    assert code == 0 and "train.py --preset small --init" in out and "resembles" not in out  # a preset exactly


def test_missing_key_is_refused_by_name(tmp_path, capsys):
    theirs = authors_tiny_state()
    del theirs["middle.0.hdfn.dynamic.2.glgf_c.wn_fc2_g.weight"]
    torch.save({"model": theirs}, tmp_path / "a.pth")
    err = refused(tmp_path / "a.pth", tmp_path / "a.pt", capsys)
    assert "missing key(s) middle.0.hdfn.dynamic.2.glgf_c.wn_fc2_g.weight" in err and "preset 'tiny'" in err


def test_extra_key_is_refused_by_name(tmp_path, capsys):
    theirs = authors_tiny_state()
    theirs["middle.0.hdmc.att.relative_position_index"] = torch.zeros(64, 64)
    torch.save({"model": theirs}, tmp_path / "a.pth")
    err = refused(tmp_path / "a.pth", tmp_path / "a.pt", capsys)
    assert "unexpected key(s) middle.0.hdmc.att.relative_position_index" in err


def test_wrong_shape_is_refused_by_name(tmp_path, capsys):
    theirs = authors_tiny_state()
    theirs["encoders.0.0.hdmc.conv1_1.weight"] = torch.zeros(16, 16, 1, 1)
    torch.save({"model": theirs}, tmp_path / "a.pth")
    err = refused(tmp_path / "a.pth", tmp_path / "a.pt", capsys)
    assert "wrong shape(s) encoders.0.0.hdmc.conv1_1.weight (16, 16, 1, 1) (expected (16, 32, 1, 1))" in err


def test_key_given_twice_is_refused(tmp_path, capsys):
    theirs = authors_tiny_state()
    theirs["module.intro.bias"] = theirs["intro.bias"]
    torch.save(theirs, tmp_path / "a.pth")
    err = refused(tmp_path / "a.pth", tmp_path / "a.pt", capsys)
    assert "more than once: intro.bias, module.intro.bias" in err


@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 8])
def test_not_a_checkpoint_is_refused(tmp_path, capsys, content):
    (tmp_path / "a.pth").write_bytes(content)
    assert "not a torch checkpoint" in refused(tmp_path / "a.pth", tmp_path / "a.pt", capsys)


def test_other_contents_are_refused(tmp_path, capsys):
    torch.save([1, 2], tmp_path / "list.pth")
    assert "holds a list" in refused(tmp_path / "list.pth", tmp_path / "a.pt", capsys)
    torch.save({"optimizer": {}, "epoch": 3}, tmp_path / "opt.pth")
    assert "no 'model' state_dict" in refused(tmp_path / "opt.pth", tmp_path / "a.pt", capsys)
    torch.save({"format_version": 1, "model": {}, "config": {}, "step": 0}, tmp_path / "ours.pth")
    assert "already a DwGN checkpoint" in refused(tmp_path / "ours.pth", tmp_path / "a.pt", capsys)


def test_file_needing_unsafe_loading_is_refused_with_the_reason(tmp_path, capsys):
    torch.save({"model": authors_tiny_state(), "args": Path("x")}, tmp_path / "a.pth")  # pickles a Python object
    err = refused(tmp_path / "a.pth", tmp_path / "a.pt", capsys)
    assert "weights_only=True" in err and "never runs code" in err and "weights_only=False" in err


def test_output_may_not_overwrite_the_source(tmp_path, capsys):
    torch.save(authors_tiny_state(), tmp_path / "a.pth")
    code, _, err = run(tmp_path / "a.pth", tmp_path / "a.pth", capsys)
    assert code == 2 and "overwrite the source" in err


def test_converted_dynamic_1x1_equals_the_authors_semantics(tmp_path, capsys):
    """Their weight-adaptive 1x1 from the equations (tests/paper_reference.py), fed their tensors by their names."""
    theirs = authors_tiny_state()
    torch.save({"model": theirs}, tmp_path / "a.pth")
    assert run(tmp_path / "a.pth", tmp_path / "a.pt", capsys)[0] == 0
    ours = dwgn.load_model(tmp_path / "a.pt").encoders[0][0].hdmc.dynamic_qkv[0]
    prefix = "encoders.0.0.hdmc.dynamic.0."
    glgf = [theirs[f"{prefix}glgf.{name}.weight"] for name in ("wn_fc1_l", "wn_fc1_g1", "wn_fc1_g2", "wn_fc2_l", "wn_fc2_g")]
    x = torch.randn(2, 16, 9, 11)
    expected = torch.cat([ref.dynamic_1x1(image, ref.glgf(image.mean(dim=(2, 3), keepdim=True), *glgf, groups=16),
                                          theirs[prefix + "conv1.weight"], theirs[prefix + "conv2.weight"], c_out=48)
                          for image in x.split(1)])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
