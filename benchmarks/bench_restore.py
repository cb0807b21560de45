"""Time restoring one large photo on the CPU, per variant, with the compute limit beside it.

    python benchmarks/bench_restore.py [--size 3000x4000] [--rounds 1] [--variants "tile=512" "tile=768" ...]

Every run is a fresh child process that restores a synthetic photo (the packaged astronaut resized to --size) with
`dwgn.restore` in one pass, so its wall time, user and system time (getrusage, all threads) and peak resident memory
(ru_maxrss) are its own; its progress lines go to stderr. A variant is space-separated KEY=VALUE:
  tile=N       restore's tile side (default: restore's own choice);
  threads=N    torch.set_num_threads(N) (default: torch's, one per core);
  amp=1        bfloat16 autocast on the CPU (restore's amp=True);
  glibc=1      glibc's default allocator behaviour: restore's `steady_heap` turned off;
  NAME=VALUE   a variable in capitals goes into the child's environment (e.g. MALLOC_ARENA_MAX=2).
The variants run in turn, round after round (A B C A B C), so the load of other processes falls on all alike.

The compute limit of a run: the multiply-accumulates of its sweeps (tiles x the MACs of one tile, counted by
dwgn.profile.count; `tiles` counts both sweeps' tiles) divided by the GMAC/s of a plain 2048 x 2048 float32 matmul
measured in the same child just before: the time the restore would take at a plain matmul's speed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CHECKPOINT = Path("checkpoints/dwgn-small-demo.safetensors")
DEFAULT_VARIANTS = ["tile=512", "tile=512 glibc=1", "tile=768", "tile=1024", "tile=512 threads=1", "tile=512 amp=1"]


def photo(h: int, w: int):
    """The packaged astronaut resized to h x w: real image content at any size."""
    import cv2
    import numpy as np
    from skimage import data

    return np.ascontiguousarray(cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_CUBIC))


def matmul_gmacs(threads: int) -> float:
    """Best of 3 GMAC/s of a 2048^3 float32 matmul with `threads` threads."""
    import torch

    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2048 ** 3 / best / 1e9


def child(checkpoint: str, h: int, w: int, variant: dict) -> dict:
    import torch

    import dwgn
    from dwgn.evaluation import restore as restoring

    if "threads" in variant:
        torch.set_num_threads(int(variant["threads"]))
    if variant.get("glibc") == "1":
        restoring.steady_heap = restoring.contextlib.nullcontext
    model = load(checkpoint)
    gmacs = matmul_gmacs(torch.get_num_threads())
    image = photo(h, w)
    dwgn.restore(model, photo(64, 64))  # warm-up
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = dwgn.restore(model, image, tile=int(variant["tile"]) if "tile" in variant else None,
                       amp=variant.get("amp") == "1", progress=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    assert out.shape == image.shape
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "peak_mb": after.ru_maxrss / 1024, "s_per_mp": wall / (h * w / 1e6), "matmul_gmacs": gmacs,
            "threads": torch.get_num_threads()}


def load(checkpoint: str):
    import dwgn

    return dwgn.load_model(checkpoint) if Path(checkpoint).is_file() else dwgn.build_model("tiny").eval()


def work(model, h: int, w: int, tile: int | None, macs: dict) -> dict:
    """The tiles restore runs for an h x w photo and their multiply-accumulates (counted here, in the parent, so that
    no child's peak memory includes the count): when tiled, the pools sweep's (tiles without overlap) and the
    forward's."""
    from dwgn.evaluation import restore as restoring
    from dwgn.profile import count

    side = restoring.auto_tile(h, w) if tile is None else restoring.tile_side(model, tile)
    tiled = bool(side) and (h > side or w > side)
    boxes = restoring._boxes(h, w, side, restoring.DEFAULT_OVERLAP) if tiled else [(0, 0, h, w)]
    runs = len(boxes) + (len(restoring._boxes(h, w, side, 0)) if tiled else 0)
    shape = boxes[0][2:]
    if shape not in macs:
        macs[shape] = count(model, shape)[1]
    return {"tiles": runs if tiled else 0, "tile_mp": runs * shape[0] * shape[1] / 1e6,
            "tmacs": macs[shape] * runs / 1e12}


def parse_variant(text: str) -> dict:
    pairs = dict(item.split("=", 1) for item in text.split())
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--size", default="3000x4000", help="H x W of the synthetic photo (default 12 MP)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--rounds", type=int, default=1, help="how many times each variant runs, in turn")
    parser.add_argument("--json", default=None, help="also write every run to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    h, w = map(int, args.size.lower().split("x"))
    if args.child is not None:
        print(json.dumps(child(args.checkpoint, h, w, parse_variant(args.child))))
        return
    if not Path(args.checkpoint).is_file():
        print(f"note: {args.checkpoint} not found, timing an untrained tiny network")
    print(f"{h}x{w} ({h * w / 1e6:.1f} MP), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    header = (f"{'variant':<28} {'wall s':>7} {'user s':>7} {'sys s':>6} {'peak MB':>8} {'s/MP':>6} {'tiles':>5} "
              f"{'tile MP':>7} {'TMAC':>5} {'GMAC/s':>6} {'limit s':>7} {'load':>5}")
    print(header)
    runs, model, macs = [], load(args.checkpoint), {}
    for _ in range(args.rounds):
        for text in args.variants:
            variant = parse_variant(text)
            env = {**os.environ, **{k: v for k, v in variant.items() if k.isupper()}}
            out = subprocess.run([sys.executable, __file__, "--checkpoint", args.checkpoint, "--size", f"{h}x{w}",
                                  "--child", text], stdout=subprocess.PIPE, text=True, env=env)  # stderr: progress
            if out.returncode:
                print(f"{text:<28} failed (exit code {out.returncode}, its error above)")
                continue
            run = {"variant": text, **json.loads(out.stdout.strip().splitlines()[-1]), "load": os.getloadavg()[0],
                   **work(model, h, w, int(variant["tile"]) if "tile" in variant else None, macs)}
            run["limit_s"] = run["tmacs"] * 1e3 / run["matmul_gmacs"]
            runs.append(run)
            print(f"{text:<28} {run['wall_s']:>7.1f} {run['user_s']:>7.1f} {run['sys_s']:>6.1f} {run['peak_mb']:>8.0f} "
                  f"{run['s_per_mp']:>6.1f} {run['tiles']:>5} {run['tile_mp']:>7.1f} {run['tmacs']:>5.2f} "
                  f"{run['matmul_gmacs']:>6.1f} {run['limit_s']:>7.1f} {run['load']:>5.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
