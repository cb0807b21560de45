"""Count the aten ops that do work in one forward + L1 backward: the number of kernels a GPU would launch.

    python benchmarks/count_kernels.py [--preset paper] [--batch 2] [--size 64] [--dynamic half]
                                       [--amp none|bf16] [--json benchmarks/results/kernels.json --label fp32]

Method: a TorchDispatchMode around one forward and one L1 backward (after a warm-up pass), on the
CPU, counting every aten op except those that only make views or aliases. Prints the total and the most
frequent ops. With --json, the figure is stored under --label in that file (other labels kept).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import dwgn

# ops that only make views or aliases: no kernel runs for them
VIEW_OPS = frozenset((
    "view", "_unsafe_view", "reshape", "expand", "unsqueeze", "squeeze", "transpose", "t", "permute", "slice",
    "select", "detach", "alias", "as_strided", "unflatten", "flatten", "split", "chunk", "unbind", "narrow",
    "lift_fresh",
    "split_with_sizes",  # Tensor.split with a list of sizes: `split` of the list above, also views
))


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name (overload dropped), views/aliases excluded."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.split_with_sizes = 0  # a view op some counters count: reported, so either reading is shown

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name not in VIEW_OPS:
            self.counts[name] += 1
        elif name == "split_with_sizes":
            self.split_with_sizes += 1
        return func(*args, **(kwargs or {}))


def count_step(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, amp: str = "none") -> OpCounter:
    """Ops of one forward + L1 backward of `model` on `x`, after one uncounted warm-up pass."""
    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = model(x)
        F.l1_loss(out.float(), target).backward()

    step()  # warm-up: caches (masks, indices) filled, as in training
    model.zero_grad(set_to_none=True)
    with OpCounter() as counter:
        step()
    return counter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--dynamic", default="half")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="CPU autocast while counting")
    parser.add_argument("--top", type=int, default=15, help="how many of the most frequent ops to print")
    parser.add_argument("--json", default=None, help="store the result in this JSON file under --label")
    parser.add_argument("--label", default="current")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = dwgn.build_model(args.preset, dynamic=args.dynamic).train()
    x = torch.rand(args.batch, 3, args.size, args.size)
    target = torch.rand_like(x)
    counter = count_step(model, x, target, args.amp)
    counts = counter.counts
    total = sum(counts.values())
    blocks = sum(1 for m in model.modules() if type(m).__name__ == "DwGNBlock")
    print(f"{args.preset} (dynamic={args.dynamic}), batch {args.batch}, {args.size}x{args.size}, amp {args.amp}: "
          f"{total} aten ops per forward + L1 backward (views excluded), {total / blocks:.0f} per block; "
          f"{total + counter.split_with_sizes} if split_with_sizes (views) were counted")
    for name, n in counts.most_common(args.top):
        print(f"  {name:32s} {n:6d}")
    if args.json:
        path = Path(args.json)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[args.label] = {"preset": args.preset, "dynamic": args.dynamic, "batch": args.batch, "size": args.size,
                            "amp": args.amp, "torch": torch.__version__, "total": total,
                            "per_block": round(total / blocks, 1), "ops": dict(counts.most_common())}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"stored under {args.label!r} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
