"""Cost of the dynamic weights: time `dynamic=half` against its static twin `dynamic=none`.

    OMP_NUM_THREADS=1 python benchmarks/bench_dynamic.py [--preset paper] [--batch 8] [--size 128] [--repeats 3]

Both models see the same inputs in the same run, measured alternately (half, none, half, none, ...) so that
machine noise hits both; the printed ratio half/none is the figure to read, not the absolute seconds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy
import torch

import dwgn


def time_step(model: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    start = time.perf_counter()
    if train:
        model.zero_grad(set_to_none=True)
        model(x).abs().mean().backward()
    else:
        with torch.inference_mode():
            model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size)
    models = {d: dwgn.build_model(args.preset, dynamic=d) for d in ("half", "none")}
    print(f"preset {args.preset}, batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} after one warm-up")
    for train, label in ((True, "forward+backward"), (False, "inference")):
        for m in models.values():
            m.train(train)
            time_step(m, x, train)  # warm-up
        times = {d: [] for d in models}
        for _ in range(args.repeats):
            for d, m in models.items():
                times[d].append(time_step(m, x, train))
        med = {d: statistics.median(t) for d, t in times.items()}
        print(f"{label:>17}: half {med['half']:.3f} s  none {med['none']:.3f} s  ratio half/none {med['half'] / med['none']:.2f}")


if __name__ == "__main__":
    main()
