"""Tiled vs whole-image restoration: how close each way of giving tiles global statistics gets.

    python benchmarks/bench_tiling.py [--size 512] [--tile 128] [--overlap 32] [--checkpoint PATH]

Prints PSNR (dB) of the tiled 8-bit output against the whole-image 8-bit output, for naive tiles (each
pools over itself), exact whole-image pools (the ceiling), a shrunk whole-image pass, and `tiled_pools`
(what `dwgn.restore` uses; 2 sweeps = refine=1). Single-threaded CPU, to share the machine.
Results for the demo model and a randomly initialised network: docs/results.md §6.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage import data
from torch import nn

import dwgn
from dwgn.evaluation.metrics import psnr
from dwgn.models.network import recorded_pools
from dwgn.evaluation.restore import _forward, tiled_forward, tiled_pools, to_uint8, whole_image_pools


def schemes(model, x, tile, overlap):
    yield "naive (tile pools itself)", None
    with recorded_pools(model) as exact:
        _forward(model, x, False)
    yield "exact whole-image pools", exact
    shrunk = whole_image_pools(model, x, tile * tile)
    yield "shrunk whole image", shrunk
    yield "shrunk + 1 tiled_pools sweep", tiled_pools(model, x, tile, overlap, shrunk)
    p = None
    for k in (1, 2):
        p = tiled_pools(model, x, tile, overlap, p)
        yield f"tiled_pools, {k} sweep(s)", p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    img = data.astronaut()
    img = np.ascontiguousarray(np.resize(img, (args.size, args.size, 3)) if args.size > 512 else img[:args.size, :args.size])
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255  # (1,3,H,W)
    models = {"tiny, N(0,0.02) init": dwgn.build_model("tiny").eval()}
    stressed = dwgn.build_model("tiny").eval()
    for m in stressed.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()  # PyTorch's default (Kaiming-uniform) init: trained-size weights
    models["tiny, Kaiming init (stress)"] = stressed
    if args.checkpoint:
        models[args.checkpoint] = dwgn.load_model(args.checkpoint).eval()
    with torch.inference_mode():
        for label, model in models.items():
            whole = to_uint8(_forward(model, x, False))
            print(f"== {label}: {args.size}^2, tile {args.tile}, overlap {args.overlap}; "
                  f"input vs whole {psnr(img, whole):.2f} dB")
            for name, pools in schemes(model, x, args.tile, args.overlap):
                t = time.perf_counter()
                tiled = to_uint8(tiled_forward(model, x, args.tile, args.overlap, pools))
                print(f"  {name:30s} {psnr(tiled, whole):6.2f} dB   ({time.perf_counter() - t:.1f} s for the tiles)")


if __name__ == "__main__":
    main()
