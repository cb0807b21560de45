"""The authors' initialisation (docs/DESIGN.md §1, "Initialisation"), checked on the paper network's statistics."""
import math

import pytest
import torch
from torch import nn

import dwgn


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return dwgn.build_model("paper")


def test_conv_weights_are_normal_with_std_0_02(paper):
    weights = [m.weight.detach().flatten() for m in paper.modules() if isinstance(m, nn.Conv2d)]
    pooled = torch.cat(weights)  # ~21 M values
    assert abs(pooled.mean().item()) < 1e-4
    assert pooled.std().item() == pytest.approx(0.02, rel=0.01)
    # a normal, not a uniform of the same std: 4.6 % of a normal lies beyond 2 std, none of a uniform
    assert (pooled.abs() > 0.04).float().mean().item() == pytest.approx(0.0455, abs=0.002)
    for w in weights:  # every conv on its own, including GLGF's and the 1-channel compensation convs
        if w.numel() >= 2000:
            assert w.std().item() == pytest.approx(0.02, rel=0.1)


def test_conv_biases_keep_pytorch_default_uniform(paper):
    convs = [m for m in paper.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    # stem, output, 3 downs, 3 ups and one HDMC projection per block (36 blocks)
    assert len(convs) == 2 + 3 + 3 + 36
    scaled = []
    for m in convs:
        bound = 1 / math.sqrt(m.weight[0].numel())  # 1/sqrt(fan_in)
        assert m.bias.abs().max().item() <= bound
        assert m.bias.abs().sum().item() > 0
        scaled.append(m.bias.detach() / bound)
    scaled = torch.cat(scaled)  # U(-1, 1): std 1/sqrt(3)
    assert scaled.std().item() == pytest.approx(1 / math.sqrt(3), rel=0.05)
    assert scaled.abs().max().item() > 0.99


def test_bias_table_is_truncated_normal(paper):
    tables = torch.cat([p.detach().flatten() for n, p in paper.named_parameters() if n.endswith("bias_table")])
    # heads x 15 x 15 per block; blocks x heads: encoders 4x1, 4x2, 6x4, middle 8x8, decoders 6x4, 4x2, 4x1
    assert tables.numel() == 225 * (4 * 1 + 4 * 2 + 6 * 4 + 8 * 8 + 6 * 4 + 4 * 2 + 4 * 1)
    assert tables.abs().max().item() <= 0.04  # truncated at 2 std
    assert tables.abs().max().item() > 0.039
    # a normal of std 0.02 cut at +-2 std has std 0.02 * 0.8796
    assert tables.std().item() == pytest.approx(0.02 * 0.8796, rel=0.05)
    assert abs(tables.mean().item()) < 1e-3


def test_layer_norms_start_at_one_and_zero(paper):
    state = paper.state_dict()
    weights = [v for k, v in state.items() if k.endswith(("norm1.weight", "norm2.weight"))]
    biases = [v for k, v in state.items() if k.endswith(("norm1.bias", "norm2.bias"))]
    assert len(weights) == len(biases) == 2 * 36
    assert all(torch.equal(w, torch.ones_like(w)) for w in weights)
    assert all(torch.equal(b, torch.zeros_like(b)) for b in biases)
