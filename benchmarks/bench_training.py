"""Training throughput (images/s) of the `tiny` and `paper` presets on the CPU: full optimizer steps
(forward, L1 loss, backward, Adam) through the engine's own pieces, after one warm-up step.

    python benchmarks/bench_training.py [--steps 3] [--batch 2] [--crop 64] [--threads N] [--presets tiny,paper]
    python benchmarks/bench_training.py --cpu-amp --presets small --crop 256   # float32 against train.py --cpu-amp

With --cpu-amp each preset is timed in float32 and under bfloat16 autocast (`train.py --cpu-amp`), alternating
step by step on the same model so that the machine's noise falls on both, and the speed-up is printed.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from dwgn.training.config import FinetuneConfig
from dwgn.training.acceleration import l1_step_loss
from dwgn.training.engine import amp_dtype_for, make_optimizer
from dwgn.models.network import build_model, count_parameters


def measure(preset: str, steps: int, batch: int, crop: int, precisions: tuple[bool, ...] = (False,)) -> list[dict]:
    """One row per entry of `precisions` (cpu_amp off / on), the steps of the precisions interleaved."""
    torch.manual_seed(0)
    model = build_model(preset)
    cfg = FinetuneConfig(preset=preset, model=model.config, batch_size=batch, crop=crop)
    dtypes = {p: amp_dtype_for(replace(cfg, cpu_amp=p), torch.device("cpu")) for p in precisions}
    optimizer = make_optimizer(model, cfg)
    inputs, targets = torch.rand(batch, 3, crop, crop), torch.rand(batch, 3, crop, crop)
    times: dict[bool, list[float]] = {p: [] for p in precisions}
    for _ in range(steps + 1):  # the first step of each warms up allocators and is not counted
        for cpu_amp in precisions:
            start = time.perf_counter()
            loss = l1_step_loss(model, inputs, targets, dtypes[cpu_amp])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # the engine's step on the CPU: no gradient scaler (fp16 is CUDA only), no clip
            optimizer.step()
            times[cpu_amp].append(time.perf_counter() - start)
    rows = []
    for cpu_amp in precisions:
        per_step = sum(times[cpu_amp][1:]) / steps
        rows.append({"preset": preset, "precision": "bf16" if cpu_amp else "float32", "params": count_parameters(model),
                     "s_per_step": per_step, "images_per_s": batch / per_step})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--presets", default="tiny,paper")
    parser.add_argument("--cpu-amp", action="store_true", help="time float32 and bf16 autocast (train.py --cpu-amp)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU training throughput: batch {args.batch}, crop {args.crop}, {args.steps} timed steps, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    precisions = (False, True) if args.cpu_amp else (False,)
    rows = [r for p in args.presets.split(",") for r in measure(p, args.steps, args.batch, args.crop, precisions)]
    print(f"{'preset':8s} {'precision':9s} {'params':>12s} {'s/step':>9s} {'images/s':>9s}")
    for r in rows:
        print(f"{r['preset']:8s} {r['precision']:9s} {r['params']:12,d} {r['s_per_step']:9.2f} "
              f"{r['images_per_s']:9.2f}")
    if args.cpu_amp:
        for fp32, bf16 in zip(rows[::2], rows[1::2]):
            print(f"{fp32['preset']}: bf16 autocast (--cpu-amp) is {bf16['images_per_s'] / fp32['images_per_s']:.2f}x "
                  "the float32 speed")
    elif len(rows) > 1:
        base = rows[0]["images_per_s"]
        for r in rows[1:]:
            print(f"{rows[0]['preset']} is {base / r['images_per_s']:.1f}x faster than {r['preset']}")


if __name__ == "__main__":
    main()
