"""Training throughput (images/s) of the `tiny` and `paper` presets on the CPU: full optimizer steps
(forward, L1 loss, backward, Adam) through the engine's own pieces, after one warm-up step.

    python benchmarks/bench_training.py [--steps 3] [--batch 2] [--crop 64] [--threads N] [--presets tiny,paper]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dwgn.training.config import FinetuneConfig
from dwgn.training.acceleration import l1_step_loss
from dwgn.training.engine import EngineContext, make_optimizer, optimizer_step
from dwgn.models.network import build_model, count_parameters


def measure(preset: str, steps: int, batch: int, crop: int) -> dict:
    torch.manual_seed(0)
    model = build_model(preset)
    cfg = FinetuneConfig(preset=preset, model=model.config, batch_size=batch, crop=crop)
    ctx = EngineContext(cfg, Path("."), torch.device("cpu"), 0, 1, model, None)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    inputs, targets = torch.rand(batch, 3, crop, crop), torch.rand(batch, 3, crop, crop)
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and is not counted
        start = time.perf_counter()
        optimizer_step(l1_step_loss(model, inputs, targets, ctx.amp_dtype), model, optimizer, scaler, cfg.grad_clip)
        times.append(time.perf_counter() - start)
    per_step = sum(times[1:]) / steps
    return {"preset": preset, "params": count_parameters(model), "s_per_step": per_step,
            "images_per_s": batch / per_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--presets", default="tiny,paper")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU training throughput: batch {args.batch}, crop {args.crop}, {args.steps} timed steps, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    rows = [measure(p, args.steps, args.batch, args.crop) for p in args.presets.split(",")]
    print(f"{'preset':8s} {'params':>12s} {'s/step':>9s} {'images/s':>9s}")
    for r in rows:
        print(f"{r['preset']:8s} {r['params']:12,d} {r['s_per_step']:9.2f} {r['images_per_s']:9.2f}")
    if len(rows) > 1:
        base = rows[0]["images_per_s"]
        for r in rows[1:]:
            print(f"{rows[0]['preset']} is {base / r['images_per_s']:.1f}x faster than {r['preset']}")


if __name__ == "__main__":
    main()
