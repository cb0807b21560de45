"""The per-image grouped 3x3 on CUDA: one grouped conv (batch folded into the groups) against im2col + bmm.

    python benchmarks/gpu_group_conv.py             # a CUDA machine (about 1 minute)
    python benchmarks/gpu_group_conv.py --dry-run   # the same code path on the CPU, tiny sizes (a smoke test)
    python benchmarks/gpu_group_conv.py --profile conv   # also: the top kernels of one bf16 `small` step

dwgn.models.dynamic_conv.per_image_group_conv3x3 computes the weight-adaptive grouped 3x3 either way (`via`);
the network picks "bmm" on CUDA. This times whole training steps (forward, L1, backward, Adam) of the `small`
and `paper` networks with each computation forced, eager in bf16 and fp32, and a CUDA-graph step, and prints
conv/bmm ratios measured in the same run, plus the largest difference of the two in one fp32 forward.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy
import torch

import dwgn.models.dynamic_conv as dynamic_conv
from dwgn.models.network import build_model
from dwgn.training.acceleration import l1_step_loss
from gpu_check import _sync, train_rate  # whole training steps, timed as benchmarks/gpu_check.py times them

_ORIGINAL = dynamic_conv.per_image_group_conv3x3


def force(via: str) -> None:
    """Make every weight-adaptive grouped 3x3 compute `via` ("conv" or "bmm")."""
    dynamic_conv.per_image_group_conv3x3 = lambda x, kernel, groups, _=None: _ORIGINAL(x, kernel, groups, via)


def step_ms(preset: str, batch: int, crop: int, mode: str, device: torch.device, steps: int) -> float:
    """Milliseconds per training step in gpu_check's `mode` ("eager bf16", "eager fp32", "cuda graphs")."""
    images_per_s, _, _ = train_rate(preset, mode, batch, crop, device, float("inf"), steps)
    return batch / images_per_s * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script only")
    parser.add_argument("--profile", choices=("conv", "bmm"), default=None,
                        help="then print torch.profiler's top kernels of one training step computed this way")
    args = parser.parse_args(argv)
    if args.dry_run:
        device, bf16, crop = torch.device("cpu"), None, 64
        cases = [("tiny", 2, "eager fp32", 1)]
    elif not torch.cuda.is_available():
        print("gpu_group_conv: no CUDA device visible; run it on a GPU machine or pass --dry-run", file=sys.stderr)
        return 1
    else:
        device, bf16, crop = torch.device("cuda"), torch.bfloat16, 128
        cases = [("small", 32, "eager bf16", 3), ("small", 32, "eager fp32", 3), ("paper", 8, "eager bf16", 2),
                 ("paper", 8, "eager fp32", 2), ("small", 32, "cuda graphs", 10)]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run, not a measurement)"
    print(f"{name}, torch {torch.__version__}, {crop}x{crop} crops")
    torch.manual_seed(0)
    model = build_model("tiny" if args.dry_run else "small").to(device).eval()
    x = torch.rand(2, 3, crop, crop, device=device)
    with torch.no_grad():
        force("conv")
        a = model(x)
        force("bmm")
        b = model(x)
    print(f"max |bmm - conv|, one fp32 forward: {(a - b).abs().max().item():.2e}")
    print("| step | conv (ms) | bmm (ms) | conv / bmm |\n|---|---|---|---|")
    for preset, batch, mode, steps in cases:
        times = {}
        for via in ("conv", "bmm"):
            force(via)
            times[via] = step_ms(preset, batch, crop, mode, device, steps)
        label = (f"{preset}, batch {batch}, {'fp32' if mode == 'eager fp32' else 'bf16'}, "
                 f"{'CUDA graph' if mode == 'cuda graphs' else 'eager'}")
        print(f"| {label} | {times['conv']:.1f} | {times['bmm']:.1f} | {times['conv'] / times['bmm']:.2f} |",
              flush=True)
    if args.profile:
        profile_step(args.profile, "tiny" if args.dry_run else "small", 2 if args.dry_run else 32, crop, bf16, device)
    dynamic_conv.per_image_group_conv3x3 = _ORIGINAL
    return 0


def profile_step(via: str, preset: str, batch: int, crop: int, amp: torch.dtype | None, device: torch.device) -> None:
    """torch.profiler's table (by device time) of one warm training step with the grouped 3x3 computed `via`."""
    from torch.profiler import ProfilerActivity, profile

    force(via)
    torch.manual_seed(0)
    model = build_model(preset).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    x, y = torch.rand(batch, 3, crop, crop, device=device), torch.rand(batch, 3, crop, crop, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for i in range(4):  # three warm steps, then the profiled one
        with profile(activities=activities) if i == 3 else contextlib.nullcontext() as prof:
            optimizer.zero_grad(set_to_none=True)
            l1_step_loss(model, x, y, amp).backward()
            optimizer.step()
            _sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(f"one {preset} step, batch {batch}, grouped 3x3 via {via}:")
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    sys.exit(main())
