"""The weight-adaptive 1x1's kernel layout, pinned by definition (docs/DESIGN.md §1): the generated vector w of
length C_out*C_in is read row-major as (C_out, C_in), weight j = kernel[j // C_in, j % C_in].

The test controls the generated vector through the parameters alone: with GLGF's first-stage weights zero,
z = sigmoid(0) = 1/2 for every channel, so w = per_channel.weight / 2 + sum(shared.weight) / 2 exactly."""
import pytest
import torch
import torch.nn.functional as F

from dwgn.models.dynamic_conv import WeightAdaptiveConv1x1


def conv_generating(vector: torch.Tensor, c_in: int, c_out: int, gate_known: bool) -> WeightAdaptiveConv1x1:
    """A weight-adaptive 1x1 whose GLGF generates `vector` for any input; with `gate_known` its spatial
    compensation is 1 everywhere (spatial1 = 0 -> sigmoid 1/2; spatial2 = centre tap 2)."""
    conv = WeightAdaptiveConv1x1(c_in, c_out, glgf_groups=c_in)
    g = conv.generator
    with torch.no_grad():
        for part in (g.local, g.squeeze, g.expand, g.shared):
            part.weight.zero_()
        g.per_channel.weight.copy_(2 * vector.view(-1, 1, 1, 1))
        if gate_known:
            conv.spatial1.weight.zero_()
            conv.spatial2.weight.zero_()
            conv.spatial2.weight[0, 0, 1, 1] = 2.0
        else:
            conv.spatial1.weight.normal_(0, 0.5)
            conv.spatial2.weight.normal_(0, 0.5)
    return conv


def test_written_out_example_c_out_twice_c_in():
    # C_in = 2, C_out = 4, w = 1..8, every pixel (1, 10): rows of the (4, 2) kernel are (1,2), (3,4), (5,6), (7,8)
    conv = conv_generating(torch.arange(1.0, 9.0), c_in=2, c_out=4, gate_known=True)
    x = torch.tensor([1.0, 10.0]).view(1, 2, 1, 1).expand(1, 2, 3, 5).contiguous()
    out = conv(x)
    expected = torch.tensor([1 + 2 * 10, 3 + 4 * 10, 5 + 6 * 10, 7 + 8 * 10], dtype=torch.float32)  # 21, 43, 65, 87
    assert torch.equal(out, expected.view(1, 4, 1, 1).expand(1, 4, 3, 5))
    # the transposed reading, kernel = w.view(C_in, C_out).T, would give 1 + 5*10 = 51 in row 0


@pytest.mark.parametrize("ratio", [1, 2, 3])
@pytest.mark.parametrize("gate_known", [True, False])
def test_row_major_reading_by_definition(ratio, gate_known):
    torch.manual_seed(ratio)
    c_in = 4
    c_out = ratio * c_in
    w = torch.randint(-4, 5, (c_out * c_in,)).float()  # small integers: the products are exact
    conv = conv_generating(w, c_in, c_out, gate_known)
    x = torch.randint(-3, 4, (2, c_in, 5, 6)).float()
    expected = torch.zeros(2, c_out, 5, 6)
    for b in range(2):
        for o in range(c_out):
            for c in range(c_in):
                expected[b, o] += w[o * c_in + c] * x[b, c]  # weight j = kernel[j // C_in, j % C_in]
    if not gate_known:
        # spatial compensation from its equation: channel mean -> 3x3 -> sigmoid -> 3x3, multiplied in
        mean = expected.mean(dim=1, keepdim=True)
        gate = F.conv2d(torch.sigmoid(F.conv2d(mean, conv.spatial1.weight, padding=1)), conv.spatial2.weight, padding=1)
        expected = expected * gate
    with torch.no_grad():
        out = conv(x)
    if gate_known:
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the per-image grouped 3x3, both computations


def _grouped3x3_reference(x: torch.Tensor, kernel: torch.Tensor, groups: int) -> torch.Tensor:
    """From the definition: out[i, o, y, x] = sum over the input channels c of o's group and taps (dy, dx) of
    kernel[i, o, c - first channel of o's group, dy, dx] * x_padded[i, c, y + dy, x + dx]."""
    b, c, h, w = x.shape
    per = c // groups
    padded = F.pad(x, (1, 1, 1, 1))
    out = torch.zeros_like(x)
    for o in range(c):
        first = (o // per) * per
        for j in range(per):
            for dy in range(3):
                for dx in range(3):
                    out[:, o] += kernel[:, o, j, dy, dx, None, None] * padded[:, first + j, dy:dy + h, dx:dx + w]
    return out


@pytest.mark.parametrize("via", ["conv", "bmm"])
@pytest.mark.parametrize("channels,groups", [(12, 3), (8, 4), (6, 6)])
def test_per_image_group_conv3x3_matches_its_definition(via, channels, groups):
    from dwgn.models.dynamic_conv import per_image_group_conv3x3

    torch.manual_seed(0)
    x = torch.randn(3, channels, 5, 7, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(3, channels, channels // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    out = per_image_group_conv3x3(x, kernel, groups, via)
    ref = _grouped3x3_reference(x, kernel, groups)
    torch.testing.assert_close(out, ref)
    weights = torch.randn_like(ref)
    grads = torch.autograd.grad((out * weights).sum(), (x, kernel))
    ref_grads = torch.autograd.grad((ref * weights).sum(), (x, kernel))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_per_image_group_conv3x3_picks_the_grouped_conv_on_the_cpu(monkeypatch):
    """The CPU keeps one grouped conv (fast there); the batched product is CUDA's (benchmarks/gpu_group_conv.py)."""
    from dwgn.models import dynamic_conv

    calls, unfold = [], F.unfold
    monkeypatch.setattr(dynamic_conv.F, "unfold", lambda *a, **k: calls.append("unfold") or unfold(*a, **k))
    x, kernel = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 2, 3, 3)
    dynamic_conv.per_image_group_conv3x3(x, kernel, 2)
    assert calls == []
    dynamic_conv.per_image_group_conv3x3(x, kernel, 2, "bmm")
    assert calls == ["unfold"]
