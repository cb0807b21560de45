"""`python -m dwgn.analysis`: record a checkpoint's features on test sets, score them, write the JSON and figure."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from torch import Tensor, nn

from dwgn.analysis.figure import plot_analysis
from dwgn.analysis.separability import (CLASSIFIER, DEFAULT_OUT, GENERATORS, Recording,
                                        format_table, record_features, separability, weather_of)
from dwgn.data.datasets import test_sets
from dwgn.data.images import read_image
from dwgn.data.paths import DEMO_CHECKPOINT as DEFAULT_CHECKPOINT
from dwgn.data.transforms import center_crop, to_tensor
from dwgn.errors import ArgumentParser, UserError
from dwgn.io import write_text_atomic
from dwgn.training.checkpoint import load_model


def test_images(names: list[str] | None, max_per_set: int, crop: int,
                data_root: Path | None = None) -> list[tuple[str, str, str, Tensor]]:
    """(weather, set key, file, centre-cropped input) for the first `max_per_set` inputs of each set."""
    out = []
    for key, pairs in test_sets(names, data_root).items():
        for inp, _gt in sorted(pairs)[:max_per_set]:
            out.append((weather_of(key), key, str(inp), to_tensor(center_crop(read_image(inp), crop))))
    return out


def load_analysis_model(path: Path, device: str) -> nn.Module:
    if not path.is_file():
        how = ("the lead ships it with the repository; until then train one (`python train.py`, which writes "
               "runs/finetune-tiny/last.pt) and pass --checkpoint runs/finetune-tiny/last.pt"
               if path == DEFAULT_CHECKPOINT else
               "check the path; training writes last.pt (and best.pt) into runs/<stage>-<preset>/")
        raise FileNotFoundError(f"checkpoint {path} not found: {how}")
    return load_model(path, device=device)


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m dwgn.analysis",
                                description="Do the generated weights separate the weathers? Records every block's "
                                            "generated kernels, pooled static-branch features and alpha per test "
                                            "image, and scores how well each tells the weathers apart.")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help=f"default: the demo checkpoint checkpoints/{DEFAULT_CHECKPOINT.name}")
    p.add_argument("--test-set", nargs="+", default=None, metavar="NAME_OR_DIR",
                   help="snow100k-s snow100k-l outdoor-rain raindrop-a raindrop-b demo, or paired folders "
                        "(one weather per set; default: demo)")
    p.add_argument("--data-root", type=Path, default=None, help="where the named benchmark sets live")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--figure", type=Path, default=None, help="also write the figure here (e.g. figures/x.png)")
    p.add_argument("--max-per-set", type=int, default=20, help="images per test set (the first, sorted)")
    p.add_argument("--crop", type=int, default=256, help="centre crop to at most this side (no resizing)")
    p.add_argument("--max-features", type=int, default=8192,
                   help="weights kept per generated kernel (a fixed random subset beyond this)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    for name in ("max_per_set", "crop", "max_features"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    model = load_analysis_model(args.checkpoint, args.device)
    images = test_images(args.test_set, args.max_per_set, args.crop, args.data_root)
    rec = record_features(model, images, args.max_features, total=len(images))
    return write_analysis(rec, args.out, figure=args.figure, meta={
        "checkpoint": str(args.checkpoint), "test_sets": args.test_set or ["demo"],
        "dynamic": getattr(getattr(model, "config", None), "dynamic", None),
        "max_per_set": args.max_per_set, "crop": f"centre crop to at most {args.crop}x{args.crop}, no resizing",
        "max_features": args.max_features})


def write_analysis(rec: Recording, out_dir: Path, figure: Path | None = None, meta: dict | None = None) -> dict:
    """Score, write separability.json and dynamic_weights.png into out_dir (and the figure to `figure`),
    print the table; returns the JSON dict."""
    sep = separability(rec)
    per_class = {w: rec.labels.count(w) for w in sorted(set(rec.labels))}
    sep["_meta"] = {**(meta or {}), "classifier": CLASSIFIER, "n_per_weather": per_class,
                    "sets": sorted(set(rec.sets)),
                    "synthetic": all(s.startswith("demo-") for s in rec.sets),
                    "chance": "share of the commonest weather",
                    "features": {"dynamic": "generated kernels of the dynamic branch (GLGF outputs): "
                                            + ", ".join(GENERATORS),
                                 "static": "global average pool of the static branch outputs (HDMC 3C | HDFN 2C)",
                                 "alpha": "HDFN's share of the static branch",
                                 "input": "global average pool of LN(block input), what HDMC's generators see"},
                    "dynamic_kept_of": {b: f.dynamic_size for b, f in rec.blocks.items()}}
    write_text_atomic(out_dir / "separability.json", json.dumps(sep, indent=2) + "\n")
    plot_analysis(rec, sep, out_dir / "dynamic_weights.png")
    if figure is not None:
        figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out_dir / "dynamic_weights.png", figure)
    print(format_table(sep))
    print(f"wrote {out_dir / 'separability.json'} and {out_dir / 'dynamic_weights.png'}"
          + (f" and {figure}" if figure else ""))
    return sep

