"""One GPU check in one go (at most ~8 minutes): training throughput and peak memory, compile time, inference
latency and bf16-vs-fp32 agreement of the `paper` network, printed as one table.

    python benchmarks/gpu_check.py [--preset paper] [--crop 128] [--batches 8 32] [--budget 420]
    python benchmarks/gpu_check.py --dry-run     # the same code path on the CPU, tiny sizes (a smoke test)

Rows: train images/s and peak GiB at each batch for eager fp32, eager bf16, compile (regional, bf16) and CUDA
graphs (bf16); compile time; inference latency (batch 1, bf16) at 512^2 and 1024^2; max |bf16 - fp32| of one
output. Every measurement has its share of --budget; one that runs out or fails prints its reason in the table
and the script goes on. Without CUDA (and without --dry-run) it exits 1 with a message.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy
import torch

from dwgn.models.network import build_model
from dwgn.training.acceleration import CudaGraphStep, capturable_adam, compile_blocks, l1_step_loss


class OutOfTime(Exception):
    pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def train_rate(preset: str, mode: str, batch: int, crop: int, device: torch.device, deadline: float,
               steps: int) -> tuple[float, float | None, float]:
    """(images/s, peak GiB, compile or capture seconds) of whole training steps in `mode`."""
    if time.perf_counter() > deadline:
        raise OutOfTime("no time left")
    torch.manual_seed(0)
    model = build_model(preset).to(device).train()
    amp = None if mode == "eager fp32" else torch.bfloat16
    if device.type != "cuda":
        amp = None  # CPU dry run: float32 only
    x = torch.rand(batch, 3, crop, crop, device=device)
    y = torch.rand(batch, 3, crop, crop, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if mode == "cuda graphs":
        optimizer = capturable_adam(model, 2e-4, (0.9, 0.999), 0.0)
        step: Callable[[], torch.Tensor] = lambda g=CudaGraphStep(model, optimizer, x, y, amp): g(x, y)
    else:
        if mode == "compile":
            compile_blocks(model, backend="inductor" if device.type == "cuda" else "eager")
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)

        def step() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = l1_step_loss(model, x, y, amp) if device.type == "cuda" else (model(x) - y).abs().mean()
            loss.backward()
            optimizer.step()
            return loss.detach()

    loss = step()  # first step: compilation / autotuning
    _sync(device)
    setup = time.perf_counter() - start
    for _ in range(2):
        loss = step()
    _sync(device)
    done, start = 0, time.perf_counter()
    while done < steps:
        if time.perf_counter() > deadline:
            raise OutOfTime(f"out of time after {done} timed steps")
        loss = step()
        done += 1
    _sync(device)
    if not torch.isfinite(loss).item():
        raise RuntimeError(f"loss {loss.item()}")
    return done * batch / (time.perf_counter() - start), _peak_gib(device), setup


def latency(preset: str, size: int, device: torch.device, deadline: float, repeats: int) -> float:
    """Median seconds of one bf16 (CUDA) / fp32 (CPU) forward at batch 1."""
    if time.perf_counter() > deadline:
        raise OutOfTime("no time left")
    model = build_model(preset).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    times = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(repeats + 2):
            if time.perf_counter() > deadline:
                raise OutOfTime(f"out of time after {len(times)} timed runs")
            start = time.perf_counter()
            model(x)
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def agreement(preset: str, size: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model(preset).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    with torch.inference_mode():
        ref = model(x).float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(x).float()
    return (low - ref).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="inference sides")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per row")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for everything (default 7 min)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset and sizes: checks the script only")
    args = parser.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        args.preset, args.crop, args.batches, args.sizes, args.steps = "tiny", 64, [2], [64], 1
        modes = ["eager fp32", "eager bf16", "compile"]
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU machine "
              "or pass --dry-run. Nothing was measured.", file=sys.stderr)
        return 1
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        modes = ["eager fp32", "eager bf16", "compile", "cuda graphs"]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run: tiny sizes, not a measurement)"
    print(f"{name}, torch {torch.__version__}; preset {args.preset}, crop {args.crop}, budget {args.budget:.0f} s")
    t0 = time.perf_counter()
    jobs = [(f"train {mode}, batch {b}", lambda m=mode, b=b: train_rate(args.preset, m, b, args.crop, device,
                                                                          deadline, args.steps))
            for b in args.batches for mode in modes]
    jobs += [(f"inference {s}x{s}", lambda s=s: latency(args.preset, s, device, deadline, 5)) for s in args.sizes]
    jobs.append(("bf16 vs fp32 max |diff|", lambda: f"{agreement(args.preset, args.sizes[0], device):.2e}"))
    rows = []
    for i, (label, job) in enumerate(jobs):
        left = args.budget - (time.perf_counter() - t0)
        deadline = time.perf_counter() + left / (len(jobs) - i)  # an equal share of what is left
        try:
            value = job()
        except OutOfTime as e:
            value = f"skipped: {e}"
        except Exception as e:  # a failing mode must not hide the others
            value = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            traceback.print_exc(limit=2)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append((label, value))
        print(f"  {label:38s} {_fmt(value)}", flush=True)
    print("\n| measurement | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {_fmt(value)} |")
    print(f"gpu_check done in {time.perf_counter() - t0:.0f} s")
    return 0


def _fmt(value) -> str:
    if isinstance(value, tuple):
        rate, peak, setup = value
        return f"{rate:.1f} img/s, peak {'-' if peak is None else f'{peak:.2f} GiB'}, first step {setup:.1f} s"
    if isinstance(value, float):
        return f"{value * 1e3:.1f} ms" if value < 10 else f"{value:.3g}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
