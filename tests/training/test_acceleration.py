"""Ways to run the same function faster: the channel LayerNorm and the window attention against their equations,
bf16 autocast, torch.compile of the blocks (fullgraph), CUDA graphs, the GPU check's CPU path."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dwgn
from dwgn.models.hdmc import WindowCrossAttention, shifted_window_mask
from dwgn.models.network import DwGNBlock, LayerNorm2d
from dwgn.training.acceleration import compile_blocks
from dwgn.training.config import ConfigError, FinetuneConfig

ROOT = Path(__file__).resolve().parents[2]


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


def test_cuda_graphs_config_refuses_what_it_cannot_capture(assert_mentions):
    with pytest.raises(ConfigError, match="cuda_graphs"):
        FinetuneConfig(cuda_graphs=True, amp="fp16").validate()
    with pytest.raises(ConfigError, match="grad_clip 0"):
        FinetuneConfig(cuda_graphs=True, grad_clip=1.0).validate()
    FinetuneConfig(cuda_graphs=True, compile=True).validate()
    if not torch.cuda.is_available():
        from dwgn.training.acceleration import capturable_adam

        with pytest.raises(ConfigError) as info:
            capturable_adam(dwgn.build_model("tiny"), 1e-3, (0.9, 0.999), 0.0)
        assert_mentions(str(info.value), "cuda_graphs", "CUDA", "cuda_graphs: false")


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


def test_global_pools_record_and_replay_under_compile_and_tiling_is_refused(assert_mentions):
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
        with pytest.raises(ValueError) as info:
            restore_tensor(model, x, tile=64, overlap=16)
        assert_mentions(str(info.value), "tile 64", "compiled", "tile=0")


@pytest.mark.parametrize("dynamic", ["half", "full", "none"])
def test_bf16_autocast_trains_and_stays_close_to_float32(dynamic):
    """CUDA trains under bf16 autocast by default: the same network under CPU bf16 autocast runs forward and
    backward (the generators in float32, the products in bfloat16) and stays near its float32 output."""
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
