"""Inference latency and peak memory of the demo model on the CPU, per image size, tiling the largest.

    python benchmarks/bench_speed.py [--checkpoint checkpoints/dwgn-small-demo.safetensors] [--sizes 256,512,1024,3000x4000]

Each size runs in a fresh child process, so "peak" is that process's own peak resident memory
(ru_maxrss) and "extra" is the peak minus the resident memory after the model was loaded and warmed up.
Images above 1 megapixel go through `dwgn.restore`'s tiling (512 px tiles, 64 px overlap, image-wide
pooled statistics); below that the whole image is one forward pass. The half/none cost ratio of the dynamic
weights is `benchmarks/bench_dynamic.py`.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_CHECKPOINT = Path("checkpoints/dwgn-small-demo.safetensors")


def photo(h: int, w: int) -> np.ndarray:
    """A packaged photo resized to h x w (real image content, any size)."""
    import cv2
    from skimage import data

    return np.ascontiguousarray(cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_CUBIC))


def child(checkpoint: str, h: int, w: int, repeats: int) -> dict:
    import torch

    import dwgn

    model = dwgn.load_model(checkpoint) if Path(checkpoint).is_file() else dwgn.build_model("tiny").eval()
    dwgn.restore(model, photo(64, 64))  # warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    image = photo(h, w)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = dwgn.restore(model, image)
        times.append(time.perf_counter() - start)
    assert out.shape == image.shape
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": f"{h}x{w}", "megapixels": h * w / 1e6, "tiled": h * w > 1024 * 1024,
            "latency_s": min(times), "peak_mb": peak, "extra_mb": peak - base, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--sizes", default="256,512,1024,3000x4000")
    parser.add_argument("--repeats", type=int, default=2, help="best of N (1 for the 12 MP photo is fine)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        h, w = map(int, args.child.split("x"))
        print(json.dumps(child(args.checkpoint, h, w, args.repeats)))
        return
    if not Path(args.checkpoint).is_file():
        print(f"note: {args.checkpoint} not found, timing an untrained tiny network (same cost)")
    rows = []
    print(f"{'size':>10} {'MP':>6} {'tiled':>6} {'latency s':>10} {'peak MB':>8} {'extra MB':>9}")
    for size in args.sizes.split(","):
        h, w = (map(int, size.split("x")) if "x" in size else (int(size), int(size)))
        repeats = 1 if h * w > 4e6 else args.repeats
        out = subprocess.run([sys.executable, __file__, "--checkpoint", args.checkpoint, "--child", f"{h}x{w}",
                              "--repeats", str(repeats)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['size']:>10} {row['megapixels']:>6.2f} {str(row['tiled']):>6} {row['latency_s']:>10.2f} "
              f"{row['peak_mb']:>8.0f} {row['extra_mb']:>9.0f}")
    print(f"(CPU, {rows[0]['threads']} threads)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
