"""The modules compute the paper's function: compared with tests/paper_reference.py, which reads docs/DESIGN.md §1's
equations off the parameters by name (window attention with loops over windows and heads, the roll and the
shifted-window mask built independently, the relative-position bias, the value swap, HDFN's alpha, the channel
LayerNorm). Parameters are redrawn at a scale where every mechanism shows (attention far from uniform, a
non-zero bias table), and inputs span several windows so that the shifted ones wrap around."""
import pytest
import torch

import paper_reference as ref
from dwgn.models.hdfn import HDFN
from dwgn.models.hdmc import HDMC
from dwgn.models.network import DwGNBlock

C, HEAD_DIM, WINDOW, GROUPS = 8, 4, 4, 4  # 2 heads, 4x4 windows, shift 2, GLGF groups 4


def redrawn(module: torch.nn.Module, seed: int = 0, scale: float = 0.4) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return module.eval()


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("static_dynamic", [False, True], ids=["half", "full"])
def test_hdmc_is_windowed_cross_attention_with_swapped_values(shift, static_dynamic):
    m = redrawn(HDMC(C, HEAD_DIM, WINDOW, shift, static_dynamic=static_dynamic, dynamic_dynamic=True, glgf_groups=GROUPS))
    x = torch.randn(2, C, 8, 12)  # 2 x 3 windows
    with torch.no_grad():
        close(m(x), ref.hdmc(x, m.state_dict(), "", HEAD_DIM, WINDOW, shift, GROUPS, static_dynamic))


def test_shifted_window_output_depends_on_the_mask():
    """The reference without its mask differs from the module: the mask matters on these inputs."""
    m = redrawn(HDMC(C, HEAD_DIM, WINDOW, 2, static_dynamic=False, dynamic_dynamic=True, glgf_groups=GROUPS))
    x = torch.randn(1, C, 8, 8)
    s = m.state_dict()
    qkv_s = ref.branch(x, s, "static_qkv.", 3 * C, 3 * C // HEAD_DIM, False, GROUPS)
    qkv_d = ref.branch(x, s, "dynamic_qkv.", 3 * C, 3 * C // HEAD_DIM, True, GROUPS)
    masked = ref.cross_window_attention(qkv_s, qkv_d, s["attention.bias_table"], HEAD_DIM, WINDOW, 2)
    # the same roll without a mask: only the windows that the roll wrapped around differ
    unmasked = torch.roll(ref.cross_window_attention(torch.roll(qkv_s, (-2, -2), (2, 3)), torch.roll(qkv_d, (-2, -2), (2, 3)),
                                                     s["attention.bias_table"], HEAD_DIM, WINDOW, 0), (2, 2), (2, 3))
    differs = (masked - unmasked).abs().amax(dim=(0, 1)) > 1e-4  # (H, W)
    rolled_back = torch.roll(differs, (-2, -2), (0, 1))  # in rolled coordinates: the last window row and column
    assert rolled_back[4:, :].any() and rolled_back[:, 4:].any() and not rolled_back[:4, :4].any()


@pytest.mark.parametrize("shift", [0, 2])
def test_block_is_the_papers_block(shift):
    m = redrawn(DwGNBlock(C, HEAD_DIM, WINDOW, shift, dynamic="half", glgf_groups=GROUPS), scale=0.3)
    x = torch.randn(2, C, 8, 12)
    with torch.no_grad():
        close(m(x), ref.block(x, m.state_dict(), "", HEAD_DIM, WINDOW, shift, GROUPS))


def test_hdfn_mixes_alpha_static_plus_one_minus_alpha_dynamic():
    m = redrawn(HDFN(C, static_dynamic=False, dynamic_dynamic=True, glgf_groups=GROUPS))
    x = torch.randn(2, C, 6, 10)
    s = m.state_dict()
    with torch.no_grad():
        alpha = ref.hdfn_alpha(x, s, "")
        assert 0.05 < alpha.min() and alpha.max() < 0.95  # both branches take part
        close(m(x), ref.hdfn(x, s, "", GROUPS))
        # alpha at its ends: 1 keeps the static branch alone, 0 the dynamic one
        positive = x.abs() + 0.1  # pooled input > 0 in every channel
        m.alpha[0].weight.fill_(1.0)
        for sign, branch, dynamic in ((1.0, "static.", False), (-1.0, "dynamic.", True)):
            m.alpha[1].weight.fill_(sign * 100.0)  # alpha = sigmoid(+-100 * a positive sum)
            alone = ref.branch(positive, s, branch, 2 * C, C, dynamic, GROUPS)
            close(m(positive), torch.nn.functional.conv2d(alone, s["project.weight"]))


def test_layer_norm_is_over_channels():
    m = redrawn(DwGNBlock(C, HEAD_DIM, WINDOW, 0, dynamic="half", glgf_groups=GROUPS))
    x = torch.randn(2, C, 5, 7) * 3 + 1
    with torch.no_grad():
        for norm in (m.norm1, m.norm2):
            close(norm(x), ref.layer_norm(x, norm.weight, norm.bias))
            norm.weight.fill_(1.0)
            norm.bias.zero_()
            y = norm(x)
            torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 5, 7), atol=1e-5, rtol=0)
            torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2, 5, 7), atol=1e-4, rtol=0)
            flat = x * 1e-3  # channel variance ~1e-6: here eps (1e-6) shows
            close(norm(flat), ref.layer_norm(flat, norm.weight, norm.bias))


def reference_gradients(m: torch.nn.Module, x: torch.Tensor, compute, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """d sum(weights * reference output) / d each state_dict tensor, through tests/paper_reference.py's loops."""
    s = {k: v.detach().clone().requires_grad_() for k, v in m.state_dict().items()}
    out = compute(x, s)
    return dict(zip(s, torch.autograd.grad((out * weights).sum(), list(s.values()))))


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("dynamic", ["half", "full"])
def test_block_output_and_every_gradient_equal_the_reference(shift, dynamic):
    """The batched block against the per-image, per-window, per-head reference in float64: the output and the
    gradient of every parameter (both GLGFs of each weight-adaptive conv, the spatial kernels, the bias table,
    alpha's 1x1s, the LayerNorms)."""
    m = redrawn(DwGNBlock(C, HEAD_DIM, WINDOW, shift, dynamic=dynamic, glgf_groups=GROUPS), scale=0.3).double()
    full = dynamic == "full"

    def compute(x, s):  # ref.block with the static branches weight-adaptive too for "full"
        h = x + ref.hdmc(ref.layer_norm(x, s["norm1.weight"], s["norm1.bias"]), s, "hdmc.", HEAD_DIM, WINDOW, shift,
                         GROUPS, static_dynamic=full)
        return h + ref.hdfn(ref.layer_norm(h, s["norm2.weight"], s["norm2.bias"]), s, "hdfn.", GROUPS,
                            static_dynamic=full)

    torch.manual_seed(1)
    x = torch.randn(2, C, 8, 12, dtype=torch.float64)
    weights = torch.randn(2, C, 8, 12, dtype=torch.float64)
    expected = reference_gradients(m, x, compute, weights)
    out = m(x)
    with torch.no_grad():
        torch.testing.assert_close(out, compute(x, m.state_dict()), rtol=1e-9, atol=1e-9)
    named = dict(m.named_parameters())
    assert set(named) == set(expected)  # every parameter is in the state_dict, and nothing else is
    grads = torch.autograd.grad((out * weights).sum(), list(named.values()))
    for (name, _), got in zip(named.items(), grads):
        assert expected[name].abs().max() > 0, name  # every parameter takes part
        torch.testing.assert_close(got, expected[name], rtol=1e-7, atol=1e-9, msg=lambda msg, n=name: f"{n}: {msg}")
