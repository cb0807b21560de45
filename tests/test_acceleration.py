"""The fast paths compute the same function: the hand-written backwards (GLGF, the weight-adaptive 1x1, the
window attention, the hoisted matrices) against finite differences and the equations, the hoisted parameter terms
against each module's own path, the fused LayerNorm, bf16 autocast, torch.compile of the blocks (fullgraph), the
GPU check's CPU path."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dwgn
from dwgn.models.dynamic_conv import GLGF, WeightAdaptiveGroupConv3x3, _GainMatrices, _GLGFStack, _MixingMatrices, _SpatiallyCompensatedProduct, _WeightAdaptive1x1, gain_matrices, mixing_matrices
from dwgn.models.hdfn import HDFN, _Mix
from dwgn.models.hdmc import WindowCrossAttention, _WindowCrossAttention, shifted_window_mask
from dwgn.models.network import DwGNBlock, LayerNorm2d
from dwgn.training.acceleration import compile_blocks
from dwgn.training.config import ConfigError, FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("r", [1, 2])
def test_glgf_stack_backward_matches_numerical_gradient(r):
    torch.manual_seed(0)
    g, b, k = 4, 3, 3
    c = g * k
    heads = [torch.randn(c, 5), torch.randn(c)] + ([torch.randn(c, c)] if r == 2 else [])  # r = 2: the gain matrix
    for source in (torch.randn(b, c, 1, 1), torch.randn(b, c, 2, 3)):  # pooled already, or pooled inside
        args = [a.double().requires_grad_() for a in (source, torch.randn(r * c, c), *heads)]
        assert torch.autograd.gradcheck(_GLGFStack.apply, args)


def test_spatially_compensated_product_backward_matches_numerical_gradient():
    """Its hand-written backward (the gate's two uses sharing one tensor) against finite differences, with the two
    3x3 kernels given per image as ``hoisted_weights`` gives them (expanded to the batch)."""
    torch.manual_seed(0)
    b, c_out, c_in = 2, 5, 3
    args = [torch.randn(b, c_out, c_in), torch.randn(b, c_in, 4, 5), torch.randn(b, 1, 3, 3), torch.randn(b, 1, 3, 3)]
    assert torch.autograd.gradcheck(_SpatiallyCompensatedProduct.apply, [a.double().requires_grad_() for a in args])


@pytest.mark.parametrize("extra", [0, 2])
def test_weight_adaptive_1x1_function_backward_matches_numerical_gradient(extra):
    """The whole weight-adaptive 1x1 as one function (pool, GLGF, product; `extra` rows sharing the pool)."""
    torch.manual_seed(0)
    b, c_in, c_out = 2, 4, 3
    args = [torch.randn(b, c_in, 3, 4), torch.randn(c_in + extra, c_in), torch.randn(c_in, c_out), torch.randn(c_in),
            torch.randn(b, 1, 3, 3), torch.randn(b, 1, 3, 3)]
    args = [a.double().requires_grad_() for a in args]
    assert torch.autograd.gradcheck(lambda *t: _WeightAdaptive1x1.apply(*t, c_out, torch.float64), args)


def test_hdfn_alpha_inside_the_generator_product_equals_its_own_path():
    """HDFN's alpha as an extra row of the dynamic 1x1's generator product gives the output and every gradient of
    alpha from its own pool and two 1x1s."""
    torch.manual_seed(0)
    hdfn = HDFN(32, static_dynamic=False, dynamic_dynamic=True, glgf_groups=8)
    for prm in hdfn.parameters():
        torch.nn.init.normal_(prm, std=0.3)
    x = torch.randn(2, 32, 8, 8)
    fused = hdfn(x)
    grads = torch.autograd.grad(fused.square().sum(), list(hdfn.parameters()))
    own = hdfn.project(_Mix.apply(hdfn.static(x), hdfn.dynamic(x), hdfn.mixing_weight(x)))
    torch.testing.assert_close(fused, own)
    for got, want in zip(grads, torch.autograd.grad(own.square().sum(), list(hdfn.parameters()))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_mixing_and_gain_matrix_backwards_match_numerical_gradient():
    torch.manual_seed(0)
    r, g, k = 2, 3, 2
    args = [torch.randn(r, g, k, k), torch.randn(r, g, k), torch.randn(r, g * k, g)]
    args = [a.double().requires_grad_() for a in args]
    eye = torch.eye(g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *t: _MixingMatrices.apply(*t, eye), args)
    assert torch.autograd.gradcheck(_GainMatrices.apply, [torch.randn(r, 5).double().requires_grad_() for _ in range(2)])


def _random_glgfs(num_weights: int) -> list[GLGF]:
    """Two GLGFs on 12 channels (groups 4) with N(0, 1) weights, so that every term matters."""
    torch.manual_seed(0)
    glgfs = [GLGF(12, num_weights, groups=4) for _ in range(2)]
    for m in glgfs:
        for prm in m.parameters():
            torch.nn.init.normal_(prm)
    return glgfs


def test_mixing_matrix_is_the_grouped_first_stage():
    """p M^T equals GLGF's first stage written with its own grouped convs, for one GLGF and for a stack of two."""
    glgfs = _random_glgfs(24)
    pooled = torch.randn(3, 12, 1, 1)
    for chosen in (glgfs[:1], glgfs):
        mixing = mixing_matrices(chosen)
        assert mixing.shape == (len(chosen), 12, 12)
        for m, matrix in zip(chosen, mixing):
            expected = (m.local(pooled) + m.expand(m.squeeze(pooled))).flatten(1)
            torch.testing.assert_close(pooled.flatten(1) @ matrix.t(), expected, rtol=1e-5, atol=1e-5)


def test_gain_matrix_is_the_one_weight_per_channel_second_stage():
    glgfs = _random_glgfs(12)
    z = torch.rand(3, 12, 1, 1)
    gains = gain_matrices(glgfs)
    assert gains.shape == (2, 12, 12)
    for m, matrix in zip(glgfs, gains):
        torch.testing.assert_close(z.flatten(1) @ matrix, (m.per_channel(z) + m.shared(z)).flatten(1))
    with pytest.raises(ValueError, match="one generated weight per channel"):
        gain_matrices([GLGF(12, 24, groups=4)])


@pytest.mark.parametrize("dynamic", ["half", "full"])
def test_hoisted_weights_give_the_same_outputs_and_gradients(dynamic):
    """The network's forward makes the parameter-only terms once (hoisted_weights, hoisted_biases); each conv and
    attention alone (their own path, no hoisting) gives the same output and the same gradient for every parameter."""
    torch.manual_seed(0)
    model = dwgn.build_model("tiny", dynamic=dynamic)
    for prm in model.parameters():
        torch.nn.init.normal_(prm, std=0.2)
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    grads = torch.autograd.grad(out.square().mean(), list(model.parameters()))
    plain = model._forward(x)  # the blocks without hoisted_weights: every conv makes its own terms
    plain_grads = torch.autograd.grad(plain.square().mean(), list(model.parameters()))
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-6)
    for (name, _), got, want in zip(model.named_parameters(), grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    held = [(m, name) for m in model.modules() for name in ("_mixing", "_gain", "_spatial", "_bias", "_alpha_row")
            if hasattr(m, name)]
    assert len({name for _, name in held}) == 5
    assert all(getattr(m, name) is None for m, name in held)  # nothing left behind after the forward


def test_hdfn_mix_backward_matches_numerical_gradient_and_lerp():
    torch.manual_seed(0)
    static, dynamic, alpha = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.rand(2, 1, 1, 1)
    torch.testing.assert_close(_Mix.apply(static, dynamic, alpha), alpha * static + (1 - alpha) * dynamic)
    assert torch.autograd.gradcheck(_Mix.apply, [t.double().requires_grad_() for t in (static, dynamic, alpha)])


def _glgf_equation(m: GLGF, pooled: torch.Tensor) -> torch.Tensor:
    """GLGF from its equation with the modules' own grouped convs: (B, C, 1, 1) -> (B, N)."""
    z = torch.sigmoid(m.local(pooled) + m.expand(m.squeeze(pooled)))
    return (m.per_channel(z) + m.shared(z)).flatten(1)


def test_fused_group_conv_equals_its_two_glgfs_and_the_gain():
    torch.manual_seed(0)
    conv = WeightAdaptiveGroupConv3x3(32, 4, glgf_groups=8)
    for p in conv.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 32, 6, 7, requires_grad=True)
    pooled = x.mean(dim=(2, 3), keepdim=True)
    kernel = _glgf_equation(conv.generator, pooled).view(2, 32, 8, 3, 3) * _glgf_equation(
        conv.compensation, pooled).view(2, 32, 1, 1, 1)
    expected = torch.cat([F.conv2d(x[i:i + 1], kernel[i], padding=1, groups=4) for i in range(2)])
    grads = torch.autograd.grad(expected.square().sum(), [x, *conv.parameters()])
    out = conv(x)  # the fused path: no hooks on the generators
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    for got, want in zip(torch.autograd.grad(out.square().sum(), [x, *conv.parameters()]), grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)  # float32 sums in another order
    conv.generator.register_forward_hook(lambda module, inputs, output: None)  # the recorded path
    torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)


def test_layer_norm_equals_the_channel_equation():
    torch.manual_seed(0)
    ln = LayerNorm2d(8)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    x = torch.randn(2, 8, 5, 7)
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-6) * ln.weight[:, None, None] + ln.bias[:, None, None]
    torch.testing.assert_close(ln(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [0, 4])
def test_window_attention_equals_explicit_softmax_and_trains_the_bias(shift):
    torch.manual_seed(0)
    heads, d, ws, h, w = 2, 8, 8, 16, 24
    att = WindowCrossAttention(heads, d, ws, shift)
    torch.nn.init.normal_(att.bias_table)
    qkv = [torch.randn(2, 3 * heads * d, h, w) for _ in range(2)]
    out = att(*qkv)
    # reference from the equation, window by window: out_s = softmax(q_s k_s^T / sqrt(d) + bias + mask) v_d
    bias = torch.stack([att.bias_table[:, i // ws - j // ws + ws - 1, i % ws - j % ws + ws - 1]
                        for i in range(ws * ws) for j in range(ws * ws)], -1).view(heads, ws * ws, ws * ws)
    rolled = [torch.roll(t, (-shift, -shift), (2, 3)) for t in qkv]
    mask = shifted_window_mask(h, w, ws, shift) if shift else torch.zeros(h // ws * (w // ws), ws * ws, ws * ws)
    expected = torch.zeros(2, 2 * heads * d, h, w)
    for branch in range(2):
        q, k, _ = rolled[branch].view(2, 3, heads, d, h, w).unbind(1)
        v = rolled[1 - branch].view(2, 3, heads, d, h, w)[:, 2]
        for wy in range(h // ws):
            for wx in range(w // ws):
                cut = lambda t: t[..., wy * ws:(wy + 1) * ws, wx * ws:(wx + 1) * ws].flatten(-2).transpose(-2, -1)
                a = cut(q) @ cut(k).transpose(-2, -1) / d ** 0.5 + bias + mask[wy * (w // ws) + wx]
                o = (a.softmax(-1) @ cut(v)).transpose(-2, -1).reshape(2, heads * d, ws, ws)
                expected[:, branch * heads * d:(branch + 1) * heads * d, wy * ws:(wy + 1) * ws, wx * ws:(wx + 1) * ws] = o
    expected = torch.roll(expected, (shift, shift), (2, 3))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    assert att.bias_table.grad is not None and att.bias_table.grad.abs().sum() > 0


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_backward_matches_numerical_gradient(shift):
    """The hand-written backward of the window attention (values swapped, bias and shift mask) against finite
    differences, for the qkv of both branches and for the bias."""
    torch.manual_seed(0)
    heads, d, ws = 2, 2, 4
    t = torch.randn(2, 1, 3 * heads * d, 8, 8, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(heads, ws * ws, ws * ws, dtype=torch.float64, requires_grad=True)
    mask = shifted_window_mask(8, 8, ws, shift).double()[:, None, None] if shift else None
    assert torch.autograd.gradcheck(lambda t, bias: _WindowCrossAttention.apply(t, bias, mask, ws, shift, heads, 0.7),
                                    (t, bias))


def test_block_traces_as_one_graph():
    """fullgraph=True: a graph break is an error. The eager backend checks the tracing only (fast)."""
    torch.manual_seed(0)
    block = DwGNBlock(32, head_dim=16, window=8, shift=4, dynamic="half", glgf_groups=16)
    reference = DwGNBlock(32, head_dim=16, window=8, shift=4, dynamic="half", glgf_groups=16)
    reference.load_state_dict(block.state_dict())
    block.compile(fullgraph=True, backend="eager")
    x = torch.randn(2, 32, 16, 16)
    out, ref = block(x), reference(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)  # the eager backend runs the same ops
    out.square().mean().backward()
    ref.square().mean().backward()
    for a, b in zip(block.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_tiny_equals_eager_for_training_and_inference():
    torch.manual_seed(0)
    model, reference = dwgn.build_model("tiny"), dwgn.build_model("tiny")
    reference.load_state_dict(model.state_dict())
    compile_blocks(model)  # inductor: needs a C++ compiler on the CPU
    x = torch.rand(2, 3, 64, 64)
    out, ref = model(x), reference(x)
    assert (out - ref).abs().max().item() <= 1e-4
    F.l1_loss(out, x).backward()
    F.l1_loss(ref, x).backward()
    worst = max((a.grad - b.grad).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
    assert worst <= 1e-4
    model.eval(), reference.eval()
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-4


def test_cuda_graphs_config_refuses_what_it_cannot_capture():
    with pytest.raises(ConfigError, match="cuda_graphs"):
        FinetuneConfig(cuda_graphs=True, amp="fp16").validate()
    with pytest.raises(ConfigError, match="grad_clip 0"):
        FinetuneConfig(cuda_graphs=True, grad_clip=1.0).validate()
    FinetuneConfig(cuda_graphs=True, compile=True).validate()
    if not torch.cuda.is_available():
        from dwgn.training.acceleration import capturable_adam

        with pytest.raises(ConfigError, match="needs a CUDA device"):
            capturable_adam(dwgn.build_model("tiny"), 1e-3, (0.9, 0.999), 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_step_equals_eager_steps():
    from dwgn.training.acceleration import CudaGraphStep, capturable_adam, l1_step_loss

    torch.manual_seed(0)
    model, reference = dwgn.build_model("tiny").cuda(), dwgn.build_model("tiny").cuda()
    reference.load_state_dict(model.state_dict())
    x, y = torch.rand(2, 3, 64, 64, device="cuda"), torch.rand(2, 3, 64, 64, device="cuda")
    step = CudaGraphStep(model, capturable_adam(model, 1e-3, (0.9, 0.999), 0.0), x, y)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    for _ in range(3):
        loss = step(x, y).item()
        optimizer.zero_grad()
        ref = l1_step_loss(reference, x, y, None)
        ref.backward()
        optimizer.step()
        assert abs(loss - ref.item()) < 1e-4
    worst = max((a - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
    assert worst < 1e-4


def test_gpu_check_without_cuda_or_time_never_crashes():
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *a],
                                    capture_output=True, text=True, timeout=300, env={"CUDA_VISIBLE_DEVICES": "",
                                                                                      "OMP_NUM_THREADS": "1"})
    if not torch.cuda.is_available():
        none = run()
        assert none.returncode == 1 and "no CUDA device" in none.stderr
    out = run("--dry-run", "--budget", "0")  # the budget is gone before the first row: every row says so
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("skipped: no time left") >= 4 and "gpu_check done" in out.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_measures_every_row():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "img/s" in out.stdout and "skipped" not in out.stdout and "failed" not in out.stdout


@pytest.mark.slow
def test_gpu_group_conv_dry_run_times_both_computations_and_profiles():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_group_conv.py"), "--dry-run", "--profile", "bmm"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    diff = float(out.stdout.split("max |bmm - conv|, one fp32 forward: ")[1].split()[0])
    assert diff < 1e-5  # the two computations of the grouped 3x3 give the same network output
    assert "| tiny, batch 2, fp32, eager |" in out.stdout and "grouped 3x3 via bmm" in out.stdout


def test_test_py_refuses_compile_with_tiling(capsys):
    from dwgn.evaluation.evaluate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--compile", "--profile"])
    assert exit_info.value.code == 2
    assert "--tile 0" in capsys.readouterr().err


def test_global_pools_record_and_replay_under_compile_and_tiling_is_refused():
    from dwgn.evaluation.restore import restore_tensor
    from dwgn.models.network import fixed_pools, recorded_pools

    torch.manual_seed(0)
    model, reference = dwgn.build_model("tiny").eval(), dwgn.build_model("tiny").eval()
    reference.load_state_dict(model.state_dict())
    compile_blocks(model, backend="eager")
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        with recorded_pools(model) as stats:
            model(x)
        with recorded_pools(reference) as expected:
            reference(x)
        assert stats.keys() == expected.keys()
        assert all(torch.equal(stats[k], expected[k]) for k in expected)
        with fixed_pools(model, expected):
            replay = model(x * 0.5)
        with fixed_pools(reference, expected):
            assert torch.equal(replay, reference(x * 0.5))
        with pytest.raises(ValueError, match="does not run on a compiled model"):
            restore_tensor(model, x, tile=64, overlap=16)


@pytest.mark.parametrize("dynamic", ["half", "full", "none"])
def test_bf16_autocast_trains_and_stays_close_to_float32(dynamic):
    """CUDA trains under bf16 autocast by default: the same network under CPU bf16 autocast runs forward and
    backward (the float32 generators, the fused functions' dtype casts) and stays near its float32 output."""
    torch.manual_seed(0)
    model = dwgn.build_model("tiny", dynamic=dynamic)
    x = torch.rand(2, 3, 32, 32)
    reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = (out.float() - x).abs().mean()
    loss.backward()
    assert out.dtype in (torch.float32, torch.bfloat16) and out.shape == x.shape
    assert (out.float() - reference).abs().max() < 0.1
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.dtype == p.dtype for g, p in zip(grads, model.parameters()))
