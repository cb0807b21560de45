"""The network of docs/DESIGN.md §1: exact parameter counts, MACs, per-image equality, any size, gradients."""
import pytest
import torch

import dwgn
from dwgn.models.dynamic_conv import GLGF, WeightAdaptiveConv1x1, WeightAdaptiveGroupConv3x3
from dwgn.models.network import DwGNBlock, count_parameters, fixed_pools, recorded_pools
from dwgn.profile import count

BLOCK_TABLE = {32: (69_107, 12_052, 81_287), 64: (157_012, 37_654, 194_922),
               128: (389_270, 129_562, 519_344), 256: (1_079_578, 476_194, 1_556_796)}


def test_paper_parameters_exact():
    assert count_parameters(dwgn.build_model("paper")) == 21_672_747
    assert count_parameters(dwgn.build_model("tiny")) == 1_038_091
    assert count_parameters(dwgn.build_model("small")) == 3_321_175  # docs/DESIGN.md §1.9's table


@pytest.mark.parametrize("channels", sorted(BLOCK_TABLE))
def test_block_parameters_match_design_table(channels):
    block = DwGNBlock(channels, head_dim=32, window=8, shift=0, dynamic="half", glgf_groups=16)
    assert (count_parameters(block.hdmc), count_parameters(block.hdfn), count_parameters(block)) == BLOCK_TABLE[channels]


def test_stem_output_down_up_parameters():
    model = dwgn.build_model("paper")
    blocks = sum(count_parameters(b) for b in model.modules() if isinstance(b, DwGNBlock))
    assert count_parameters(model) - blocks == 776_579


def test_glgf_parameter_formula():
    c, n, g = 48, 48 * 7, 16
    assert count_parameters(GLGF(c, n, g)) == c * c // g + 2 * c + g * c + n


def test_paper_macs_within_3_percent():
    # cost is linear in pixels at multiples of 64: count at 64^2 and scale to 256^2
    half = count(dwgn.build_model("paper"), 64)[1] * 16
    none = count(dwgn.build_model("paper", dynamic="none"), 64)[1] * 16
    assert abs(half / 107.5e9 - 1) < 0.03
    # the generated-weight convs are counted: the half-dynamic model costs about what its static twin costs
    assert abs(half / none - 1) < 0.01


def test_dynamic_modes_change_parameter_count():
    n = {d: count_parameters(dwgn.build_model("tiny", dynamic=d)) for d in ("none", "half", "full")}
    assert n["none"] < n["half"] < n["full"]
    assert not any(isinstance(m, (WeightAdaptiveConv1x1, WeightAdaptiveGroupConv3x3))
                   for m in dwgn.build_model("tiny", dynamic="none").modules())


@pytest.mark.parametrize("dynamic", ["half", "none", "full"])
def test_each_image_same_alone_or_in_batch(dynamic):
    torch.manual_seed(0)
    model = dwgn.build_model("tiny", dynamic=dynamic).eval()
    batch = torch.rand(4, 3, 64, 64)
    batch[1] *= 0.3  # four clearly different images
    batch[2] = batch[2].flip(-1) ** 2
    with torch.no_grad():
        together = model(batch)
        for i in range(4):
            alone = model(batch[i:i + 1])
            assert (together[i] - alone[0]).abs().max().item() <= 1e-5


def test_generated_kernels_differ_between_images_and_repeat_for_same_image():
    torch.manual_seed(0)
    conv = WeightAdaptiveGroupConv3x3(channels=32, groups=4)
    kernels = {}
    conv.generator.register_forward_hook(lambda m, i, out: kernels.setdefault("k", out))
    a, b = torch.rand(1, 32, 16, 16), torch.rand(1, 32, 16, 16) * 0.2
    x = torch.cat([a, b, a])
    conv(x)
    k = kernels["k"]
    assert k.shape == (3, 9 * 32 * 32 // 4)
    assert torch.equal(k[0], k[2])
    assert (k[0] - k[1]).abs().max() > 1e-4


def test_shifted_windows_used_on_odd_blocks():
    model = dwgn.build_model("paper")
    shifts = [blk.hdmc.attention.shift for blk in model.encoders[0]]
    assert shifts == [0, 4, 0, 4]


@pytest.mark.parametrize("size", [(37, 45), (64, 130)])
def test_odd_sizes_come_back_at_their_size(size):
    model = dwgn.build_model("tiny").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, *size)).shape == (1, 3, *size)


@pytest.mark.slow
def test_large_odd_size():
    model = dwgn.build_model("tiny").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 300, 517)).shape == (1, 3, 300, 517)


def parameters_without_gradient(model: torch.nn.Module) -> list[str]:
    """Names of the parameters whose gradient is missing or exactly zero after one backward pass.

    From a perturbed, non-initial state: at initialisation every LayerNorm bias is 0, so the channel sum of a
    1x1's input is 0 and GLGF's shared term (one number added to every kernel entry) gets exactly 0 gradient.
    A parameter that is really disconnected still gets none after the perturbation."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model(torch.rand(2, 3, 64, 64)).abs().mean().backward()
    return [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]


@pytest.mark.parametrize("dynamic", ["half", "full"])
def test_every_parameter_receives_a_gradient(dynamic):
    torch.manual_seed(0)
    model = dwgn.build_model("tiny", dynamic=dynamic, enc_blocks=(2, 1, 1))  # 2 blocks: a shifted one too
    assert parameters_without_gradient(model) == []


def test_gradient_check_reports_disconnected_parameters():
    torch.manual_seed(0)
    model = dwgn.build_model("tiny")
    model.middle[0].hdfn.unused = torch.nn.Parameter(torch.ones(3))  # registered, never used
    # one path cut: the dynamic q, k, v of the first block leave the graph
    model.encoders[0][0].hdmc.dynamic_qkv.register_forward_hook(lambda m, i, out: out.detach())
    cut = sorted(n for n, _ in model.named_parameters() if n.startswith("encoders.0.0.hdmc.dynamic_qkv."))
    assert len(cut) == 17  # 3 GLGFs of 5 convs + 2 spatial-compensation convs
    assert sorted(parameters_without_gradient(model)) == sorted(cut + ["middle.0.hdfn.unused"])


def test_state_dict_round_trip_is_exact():
    torch.manual_seed(0)
    a = dwgn.build_model("tiny").eval()
    b = dwgn.build_model("tiny").eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 40, 70)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_build_model_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        dwgn.build_model("huge")
    with pytest.raises(ValueError, match="unknown model option"):
        dwgn.build_model("tiny", widht=8)
    with pytest.raises(ValueError, match="dynamic='some'"):
        dwgn.build_model("tiny", dynamic="some")
    with pytest.raises(ValueError, match="multiple of head_dim"):
        dwgn.build_model("tiny", width=24)


def test_recorded_then_fixed_pools_reproduce_the_forward():
    torch.manual_seed(0)
    model = dwgn.build_model("tiny").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), recorded_pools(model) as stats:
        reference = model(x)
    # per block: the dynamic 1x1 and 3x3 of HDMC and of HDFN, and HDFN's alpha; tiny has 7 blocks
    assert len(stats) == 5 * 7
    assert all(v.shape[:1] == (1,) and v.shape[2:] == (1, 1) for v in stats.values())
    with torch.no_grad(), fixed_pools(model, stats):
        replay = model(x)
        other = model(x * 0.5)
    assert torch.equal(reference, replay)
    with torch.no_grad():
        assert not torch.allclose(other, model(x * 0.5))  # fixed statistics really replace the image's own
    with pytest.raises(ValueError, match="no recorded statistic"):
        with fixed_pools(model, {}):
            pass


def test_glgf_matmuls_equal_the_conv_definition():
    """GLGF runs as matmuls; it must compute exactly the grouped-1x1-conv equation of docs/DESIGN.md §1."""
    torch.manual_seed(0)
    m = GLGF(48, 48 * 9, 16)
    for conv in m.modules():
        if isinstance(conv, torch.nn.Conv2d):
            torch.nn.init.normal_(conv.weight)
    p = torch.rand(3, 48, 1, 1)
    z = torch.sigmoid(m.local(p) + m.expand(m.squeeze(p)))
    reference = (m.per_channel(z) + m.shared(z)).flatten(1)
    torch.testing.assert_close(m(p), reference, rtol=1e-5, atol=1e-5)


def test_spatial_compensation_equals_per_image_convs():
    torch.manual_seed(0)
    conv = WeightAdaptiveConv1x1(16, 32)
    x = torch.rand(3, 16, 20, 24)
    kernel = conv.generator(conv.pool(x)).view(3, 32, 16)  # row-major (C_out, C_in)
    out = torch.einsum("boc,bchw->bohw", kernel, x)
    gate = conv.spatial2(torch.sigmoid(conv.spatial1(out.mean(1, keepdim=True))))
    torch.testing.assert_close(conv(x), out * gate, rtol=1e-5, atol=1e-6)


def test_group_conv3x3_equals_per_image_conv_then_channel_gain():
    torch.manual_seed(0)
    conv = WeightAdaptiveGroupConv3x3(channels=32, groups=4)
    x = torch.rand(2, 32, 10, 14)
    pooled = conv.pool(x)
    kernels = conv.generator(pooled).view(2, 32, 8, 3, 3)
    gains = conv.compensation(pooled)  # (B, 32)
    expected = torch.stack([torch.nn.functional.conv2d(x[i:i + 1], kernels[i], padding=1, groups=4)[0] * gains[i, :, None, None]
                            for i in range(2)])
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-6)


def test_constants_first_made_during_inference_still_serve_training():
    """Restoring a photo (inference mode) and then training in the same process: the cached shift masks made
    during the restore must be usable by autograd afterwards."""
    from dwgn.models.hdmc import WindowCrossAttention

    torch.manual_seed(0)
    model = dwgn.build_model("tiny", enc_blocks=(2, 1, 1))  # block 1 of level 1 has shifted windows
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        model(x)
    masks = [t for m in model.modules() if isinstance(m, WindowCrossAttention) for t in m._masks.values()]
    assert masks and not any(t.is_inference() for t in masks)  # made in inference mode, kept, and usable
    (model(x) - x).abs().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
