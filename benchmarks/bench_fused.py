"""The plain network against the hand-written fused autograd functions on the CPU: one training step (forward,
L1 loss, backward, Adam) and one inference, eager and with regional torch.compile, timed alternately in one run.

    python benchmarks/bench_fused.py [--preset paper] [--batch 2] [--crop 128] [--size 256] [--repeats 5]
                                     [--fused-from bab1527] [--small-size 512] [--threads 1] [--clock cpu]
                                     [--variants plain ...]

Variants: "plain" is this checkout's network; "fused" is the network of the commit --fused-from (its
dwgn/ extracted with `git archive` into a temporary folder), whose forward ran through seven hand-written
autograd functions and per-forward hoisted terms; "+compile" compiles every DwGNBlock
(dwgn.training.acceleration.compile_blocks, inductor). Each variant is a worker process holding one model with the
same weights; the workers take turns, one measurement at a time, so that machine noise hits all of them: read
the medians and the ratios. The first call of each kind is not timed (for "+compile" it compiles: "compile").
Also: max |variant - plain| of one inference output and the first step's loss (the same function), and the
inference of the `small` preset at --small-size (eval, no grad, batch 1) for the eager variants.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "plain+compile", "fused", "fused+compile")


def worker(args: argparse.Namespace) -> int:
    """One variant: reads commands (train, infer, small, check PATH) from stdin, answers one JSON line each."""
    sys.path.insert(0, args.root)
    import torch
    import torch.nn.functional as F

    from dwgn.models.network import build_model
    from dwgn.training.acceleration import compile_blocks

    def made(preset: str, state: str) -> torch.nn.Module:
        model = build_model(preset)
        model.load_state_dict(torch.load(state))
        if args.compile:
            compile_blocks(model)
        return model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = made(args.preset, args.state)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    x, y = torch.rand(args.batch, 3, args.crop, args.crop), torch.rand(args.batch, 3, args.crop, args.crop)
    image = torch.rand(1, 3, args.size, args.size)
    small: list[torch.nn.Module] = []
    for line in sys.stdin:
        command, *rest = line.split()
        start, cpu, extra = time.perf_counter(), time.process_time(), {}
        if command == "train":
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss = F.l1_loss(model(x), y)
            loss.backward()
            optimizer.step()
            extra["loss"] = loss.item()
        elif command in ("infer", "check"):
            model.eval()
            with torch.no_grad():
                out = model(image)
            if command == "check":
                torch.save(out, rest[0])
        elif command == "small":
            if not small:
                small.append(made("small", args.small_state).eval())
                start, cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                small[0](torch.rand(1, 3, args.small_size, args.small_size, generator=torch.Generator().manual_seed(0)))
        print("RESULT " + json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                                      **extra}), flush=True)
    return 0


class Worker:
    def __init__(self, name: str, root: Path, args: argparse.Namespace, states: dict[str, Path]) -> None:
        self.name = name
        command = [sys.executable, __file__, "--worker", "--root", str(root), "--compile", str(int("+compile" in name)),
                   "--preset", args.preset, "--state", str(states[args.preset]), "--small-state", str(states["small"]),
                   "--batch", str(args.batch), "--crop", str(args.crop), "--size", str(args.size),
                   "--small-size", str(args.small_size), "--threads", str(args.threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        raise RuntimeError(f"worker {self.name} ended during {command!r} (exit {self.process.wait()})")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def extract(commit: str, into: Path) -> Path:
    """dwgn/ of `commit`, unpacked under `into` (nothing in this checkout changes)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "dwgn.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), commit, "dwgn"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=128, help="training crop side")
    parser.add_argument("--size", type=int, default=256, help="inference side (batch 1)")
    parser.add_argument("--small-size", type=int, default=512, help="side of the `small` inference row; 0: none")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker; 0: torch's default")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the worker's CPU time, which other processes on a shared machine do not inflate "
                             "(with --threads 1 it is the computation's time)")
    parser.add_argument("--fused-from", default="bab1527", help="commit whose dwgn/ is the fused variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--compile", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--small-state", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(ROOT))
    import torch

    clock = "cpu" if args.clock == "cpu" else "seconds"

    from dwgn.models.network import build_model

    with tempfile.TemporaryDirectory(prefix="bench_fused_") as tmp:
        tmp = Path(tmp)
        states = {}
        for preset in {args.preset, "small"}:
            torch.manual_seed(0)
            states[preset] = tmp / f"{preset}.pt"
            torch.save(build_model(preset).state_dict(), states[preset])
        fused_root = extract(args.fused_from, tmp / "fused") if any("fused" in v for v in args.variants) else None
        workers = [Worker(v, fused_root if v.startswith("fused") else ROOT, args, states) for v in args.variants]
        print(f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads per worker; "
              f"preset {args.preset}; training step: batch {args.batch}, crop {args.crop}, Adam; inference: "
              f"{args.size}x{args.size}, batch 1, no grad; median of {args.repeats}, {args.clock} clock; fused = dwgn/ of "
              f"{args.fused_from}", flush=True)
        try:
            outputs, infer_first = {}, {}
            for w in workers:  # the first inference (compiles the inference graphs)
                infer_first[w.name] = w(f"check {tmp / w.name}.pt")["seconds"]
                outputs[w.name] = torch.load(tmp / f"{w.name}.pt")
            first = {w.name: w("train") for w in workers}  # compiles the training graphs
            base = workers[0].name
            for w in workers:
                print(f"  {w.name:>14}: max |out - {base}| {(outputs[w.name] - outputs[base]).abs().max().item():.1e}, "
                      f"first loss {first[w.name]['loss']:.7f}, first step {first[w.name]['seconds']:.1f} s, "
                      f"first inference {infer_first[w.name]:.1f} s", flush=True)
            eager = [w for w in workers if "+compile" not in w.name]
            kinds = [("train", workers), ("infer", workers)] + ([("small", eager)] if args.small_size else [])
            for _, chosen in kinds[2:]:
                for w in chosen:
                    w("small")  # builds the small model
            times: dict[tuple[str, str], list[float]] = {}
            for r in range(args.repeats):
                for kind, chosen in kinds:
                    turn = chosen[r % len(chosen):] + chosen[:r % len(chosen)]  # each variant goes first in turn
                    for w in turn:
                        times.setdefault((kind, w.name), []).append(w(kind)[clock])
                print(f"  repeat {r + 1}/{args.repeats} done", flush=True)
                table(args, kinds, times)  # so far: a run cut short still leaves its numbers
        finally:
            for w in workers:
                w.close()
    return 0


def table(args: argparse.Namespace, kinds: list, times: dict[tuple[str, str], list[float]]) -> None:
    labels = {"train": f"training step ({args.preset}, batch {args.batch}, {args.crop}^2)",
              "infer": f"inference ({args.preset}, {args.size}^2)",
              "small": f"inference (small, {args.small_size}^2)"}
    print(f"\n| measurement | {' | '.join(args.variants)} |\n|---|{'---|' * len(args.variants)}")
    for kind, chosen in kinds:
        med = {w.name: statistics.median(times[kind, w.name]) for w in chosen}
        plain = [v for k, v in med.items() if k.startswith("plain")]
        best = min(plain) if plain else None
        cells = [f"{med[v]:.2f} s" + (f" ({best / med[v]:.2f}x)" if best else "") if v in med else "-"
                 for v in args.variants]
        print(f"| {labels[kind]} | {' | '.join(cells)} |")
    print("(x: the fastest plain variant's median / this one's; above 1 is faster than plain)")
    for (kind, name), values in times.items():
        print(f"  {kind} {name}: {', '.join(f'{v:.2f}' for v in values)} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
