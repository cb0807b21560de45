"""Regional torch.compile against eager: compile time and the speed of a training step and of inference.

    python benchmarks/bench_compile.py [--preset tiny] [--batch 2] [--size 64] [--repeats 5] [--backend inductor]

Every DwGNBlock is compiled (dwgn.training.acceleration.compile_blocks, fullgraph). Eager and compiled models
with the same weights are timed alternately in the same run, so machine noise hits both: read the ratios. The
first compiled call of each kind includes compilation ("compile time").
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy
import torch
import torch.nn.functional as F

from dwgn.models.network import build_model
from dwgn.training.acceleration import compile_blocks


def train_step(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    F.l1_loss(model(x), x).backward()
    return time.perf_counter() - start


def infer(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", default="inductor")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    eager = build_model(args.preset).train()
    compiled = build_model(args.preset).train()
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled, backend=args.backend)
    x = torch.rand(args.batch, 3, args.size, args.size)
    print(f"{args.preset}, batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
          f"backend {args.backend}, median of {args.repeats}")
    for label, run, mode in (("training step", train_step, True), ("inference", infer, False)):
        eager.train(mode), compiled.train(mode)
        run(eager, x)
        first = run(compiled, x)  # compiles
        times = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            times["eager"].append(run(eager, x))
            times["compiled"].append(run(compiled, x))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{label:>14}: compile (first call) {first:.1f} s; eager {med['eager'] * 1e3:.1f} ms, compiled "
              f"{med['compiled'] * 1e3:.1f} ms, speed-up {med['eager'] / med['compiled']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
