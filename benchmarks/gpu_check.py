"""CUDA check of the training engine, at most ~5 minutes: bf16 (and fp16 + GradScaler) training steps of
the `paper` network, printing images/s and peak GPU memory, then a short engine run with resume.

    python benchmarks/gpu_check.py [--preset paper] [--batch 8] [--crop 128] [--budget 240]
Exits 1 with a message where there is no CUDA device.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy
import torch
from torch.utils.data import Dataset

from dwgn.training.config import FinetuneConfig
from dwgn.training.engine import EngineContext, Stage, forward_loss, make_optimizer, optimizer_step, train
from dwgn.models.network import build_model


class RandomPairs(Dataset):
    """Generated pairs, deterministic in the sample seed (the engine's (index, seed) interface)."""

    def __init__(self, n: int, crop: int):
        self.n, self.crop = n, crop

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        _, seed = item
        g = torch.Generator().manual_seed(seed)
        clean = torch.rand(3, self.crop, self.crop, generator=g)
        return (clean + 0.2 * torch.rand(3, self.crop, self.crop, generator=g)).clamp(0, 1), clean


def throughput(preset: str, amp: str, batch: int, crop: int, deadline: float) -> tuple[float, float, float]:
    """(images/s, peak GiB, last loss) of full optimizer steps under `amp` autocast."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_model(preset).to(device)
    cfg = FinetuneConfig(preset=preset, model=model.config, batch_size=batch, crop=crop, amp=amp)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    ctx = EngineContext(cfg, Path("."), device, 0, 1, model, dtype)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x, y = torch.rand(batch, 3, crop, crop, device=device), torch.rand(batch, 3, crop, crop, device=device)
    torch.cuda.reset_peak_memory_stats()
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        optimizer_step(forward_loss(model, x, y, ctx), model, optimizer, scaler, 0.0)
    torch.cuda.synchronize()
    start, steps = time.perf_counter(), 0
    while steps < 50 and time.perf_counter() < deadline:
        loss = forward_loss(model, x, y, ctx)
        optimizer_step(loss, model, optimizer, scaler, 0.0)
        steps += 1
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return steps * batch / elapsed, torch.cuda.max_memory_allocated() / 2**30, float(loss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the throughput part")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU machine. "
              "Nothing was checked.", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; preset {args.preset}, batch {args.batch}, "
          f"crop {args.crop}")
    t0 = time.perf_counter()
    print(f"{'amp':6s} {'images/s':>9s} {'peak GiB':>9s} {'loss':>8s}")
    for amp, share in (("bf16", 0.6), ("fp16", 1.0)):
        ips, peak, loss = throughput(args.preset, amp, args.batch, args.crop, t0 + share * args.budget)
        print(f"{amp:6s} {ips:9.1f} {peak:9.2f} {loss:8.4f}")
    with tempfile.TemporaryDirectory() as tmp:  # the loop itself on CUDA: bf16 steps, kill-free resume
        cfg = FinetuneConfig(preset="tiny", steps=4, batch_size=4, crop=64, num_workers=0, save_every=2,
                             val_every=0, out=tmp, from_scratch=True, amp="bf16")
        first = train(replace(cfg, steps=2), Stage("finetune", build_model("tiny"), RandomPairs(16, 64)))
        second = train(cfg, Stage("finetune", build_model("tiny"), RandomPairs(16, 64)))
        print(f"engine run on CUDA: {first.step} steps, then extended to {second.step}; loss {second.last_loss:.4f}")
    print(f"gpu_check done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
