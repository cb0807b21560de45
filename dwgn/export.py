"""Export a training checkpoint as a small release file: `python -m dwgn.export SRC DST [--dtype float16]`.

Keeps what `dwgn.load_model` needs (format_version, config, step and the weights -- the EMA weights when the
run kept them) and drops the optimizer, scheduler, RNG and Stage-1 generators. float16 halves the size; the
weights are cast back to float32 when loaded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dwgn.training.checkpoint import load_checkpoint, model_weights, save_checkpoint


def export(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16, note: str = "") -> dict:
    ckpt = load_checkpoint(src)
    weights = model_weights(ckpt)
    release = {
        "format_version": ckpt["format_version"],
        "model": {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()},
        "config": ckpt["config"],
        "step": ckpt["step"],
        "exported_from": str(src),
        "note": note,
    }
    save_checkpoint(dst, release)
    return release


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dwgn.export", description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--note", default="", help="free text stored in the file (what it was trained on)")
    args = parser.parse_args(argv)
    release = export(args.src, args.dst, getattr(torch, args.dtype), args.note)
    size = Path(args.dst).stat().st_size / 2 ** 20
    print(f"wrote {args.dst}: step {release['step']}, {args.dtype}, {size:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
