"""The authors' parameter names, entry by entry: where each tensor of their network (class WAformer) must land in
ours. The expected place is written out here from the structure of their model file, independently of
dwgn.models.authors.RENAMES: a LayerNorm `ln1` before the attention (HDMC) and `ln2` before the feed-forward
(HDFN); `conv` the static branch (1x1, GELU, grouped 3x3), `dynamic` the weight-adaptive one, whose 1x1 (index 0)
has a kernel generator `glgf` and the two 3x3 convs `conv1`, `conv2` of its spatial compensation, and whose 3x3
(index 2) has a kernel generator `glgf` and a channel-gain generator `glgf_c`; in a generator `wn_fc1_l` the local
grouped 1x1, `wn_fc1_g1` / `wn_fc1_g2` the squeeze to g groups and the expansion back, `wn_fc2_l` the per-channel
and `wn_fc2_g` the shared output 1x1; `att.relative_position_params` the bias table; `conv1_1` the output 1x1;
`linear` the two 1x1s of HDFN's alpha; `intro` / `ending` the first and last 3x3.

Several of these are the same shape (ln1 / ln2, conv1 / conv2, most of glgf / glgf_c), so the checks fill every
tensor with a value of its own: a swap of two same-shaped entries moves a value to the wrong place."""
import re
from pathlib import Path

import pytest
import torch

import dwgn
import paper_reference as ref
from dwgn.models.authors import convert_state_dict, to_authors, to_ours

TABLE = Path(__file__).resolve().parents[1] / "fixtures" / "authors_paper_state_dict.tsv"

GENERATOR = {"wn_fc1_l": "local", "wn_fc1_g1": "squeeze", "wn_fc1_g2": "expand", "wn_fc2_l": "per_channel",
             "wn_fc2_g": "shared"}


def _block_table() -> dict[str, str]:
    """Their key inside a block -> ours."""
    table = {
        "ln1.weight": "norm1.weight", "ln1.bias": "norm1.bias",              # before HDMC
        "ln2.weight": "norm2.weight", "ln2.bias": "norm2.bias",              # before HDFN
        "hdmc.conv.0.weight": "hdmc.static_qkv.0.weight",                    # static 1x1
        "hdmc.conv.2.weight": "hdmc.static_qkv.2.weight",                    # static grouped 3x3
        "hdmc.att.relative_position_params": "hdmc.attention.bias_table",
        "hdmc.conv1_1.weight": "hdmc.project.weight", "hdmc.conv1_1.bias": "hdmc.project.bias",
        "hdfn.conv.0.weight": "hdfn.static.0.weight", "hdfn.conv.2.weight": "hdfn.static.2.weight",
        "hdfn.linear.0.weight": "hdfn.alpha.0.weight", "hdfn.linear.1.weight": "hdfn.alpha.1.weight",
        "hdfn.conv1_1.weight": "hdfn.project.weight",
    }
    for theirs, ours in (("hdmc.dynamic", "hdmc.dynamic_qkv"), ("hdfn.dynamic", "hdfn.dynamic")):
        table[f"{theirs}.0.conv1.weight"] = f"{ours}.0.spatial1.weight"
        table[f"{theirs}.0.conv2.weight"] = f"{ours}.0.spatial2.weight"
        for piece, name in GENERATOR.items():
            table[f"{theirs}.0.glgf.{piece}.weight"] = f"{ours}.0.generator.{name}.weight"
            table[f"{theirs}.2.glgf.{piece}.weight"] = f"{ours}.2.generator.{name}.weight"
            table[f"{theirs}.2.glgf_c.{piece}.weight"] = f"{ours}.2.compensation.{name}.weight"
    return table


BLOCK = _block_table()
TOP = {"intro.weight": "stem.weight", "intro.bias": "stem.bias", "ending.weight": "output.weight",
       "ending.bias": "output.bias"}
_BLOCK_PREFIX = re.compile(r"^((?:encoders|decoders)\.\d+\.\d+|middle\.\d+)\.(.+)$")
_SAME = re.compile(r"^(downs|ups)\.\d+\.1\.(weight|bias)$")  # the resampling convs keep their names


def expected_ours(theirs: str) -> str:
    if theirs in TOP:
        return TOP[theirs]
    if _SAME.match(theirs):
        return theirs
    prefix, rest = _BLOCK_PREFIX.match(theirs).groups()
    return f"{prefix}.{BLOCK[rest]}"


def expected_theirs(ours: str) -> str:
    inverse_top, inverse_block = {v: k for k, v in TOP.items()}, {v: k for k, v in BLOCK.items()}
    if ours in inverse_top:
        return inverse_top[ours]
    if _SAME.match(ours):
        return ours
    prefix, rest = _BLOCK_PREFIX.match(ours).groups()
    return f"{prefix}.{inverse_block[rest]}"


def paper_keys() -> list[str]:
    rows = [line.split("\t")[0] for line in TABLE.read_text().splitlines() if not line.startswith("#")]
    return rows[1:]


def authors_state(model: torch.nn.Module, fill) -> dict[str, torch.Tensor]:
    """Our model's tensors under the authors' names (from the table above), each made by fill(i, shape)."""
    return {expected_theirs(k): fill(i, v.shape) for i, (k, v) in enumerate(model.state_dict().items())}


def test_every_paper_key_is_renamed_as_the_papers_structure_says():
    keys = paper_keys()
    assert len(keys) == 1744 and len(BLOCK) == 48
    wrong = [(k, to_ours(k), expected_ours(k)) for k in keys if to_ours(k) != expected_ours(k)]
    assert not wrong, wrong[:5]
    assert all(to_authors(expected_ours(k)) == k for k in keys)


def test_converted_tensors_land_where_the_papers_structure_says():
    """Every tensor of an authors'-layout state_dict filled with its own number, converted by the project's
    converter: each number is found, whole, at the expected place of our network."""
    model = dwgn.build_model("tiny", enc_blocks=(2, 1, 1))
    theirs = authors_state(model, lambda i, shape: torch.full(shape, float(i + 1)))
    converted, config = convert_state_dict(theirs)
    assert config == model.config and len(converted) == len(theirs) == 400
    for i, (key, value) in enumerate(theirs.items()):
        landed = converted[expected_ours(key)]
        assert landed.shape == value.shape and bool((landed == i + 1).all()), (key, expected_ours(key))


@pytest.mark.parametrize("block", ["encoders.0.0", "encoders.0.1", "decoders.1.0"])
def test_converted_block_computes_the_papers_block_read_from_the_authors_names(block):
    """The paper's block (tests/paper_reference.py) fed the authors' tensors by their meaning, against our block
    after conversion, with every tensor random (none interchangeable)."""
    torch.manual_seed(0)
    model = dwgn.build_model("tiny", enc_blocks=(2, 1, 1))
    theirs = authors_state(model, lambda i, shape: torch.randn(shape) * 0.2)
    converted, config = convert_state_dict(theirs)
    model.load_state_dict(converted)
    model.eval()
    by_meaning = {expected_ours(k): v for k, v in theirs.items()}
    level, index = (int(n) for n in block.split(".")[1:])
    ours = (model.encoders if block.startswith("encoders") else model.decoders)[level][index]
    channels = by_meaning[f"{block}.norm1.weight"].shape[0]
    shift = config.window // 2 if index % 2 else 0
    x = torch.randn(1, channels, 8, 16)
    with torch.no_grad():
        expected = ref.block(x, by_meaning, f"{block}.", config.head_dim, config.window, shift, config.glgf_groups)
        assert expected.sub(x).abs().max() > 0.1
        error = (ours(x) - expected).abs() / (1 + expected.abs())  # float32 sums of different order
        assert float(error.max()) < 1e-4, (float(error.max()), float(expected.abs().max()))
