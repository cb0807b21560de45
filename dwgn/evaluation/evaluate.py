"""`python test.py`: score a checkpoint on the benchmarks, restore a folder of photos, profile the network.

Protocol (docs/DESIGN.md §4): every restored image is rounded to 8 bits and saved as PNG; PSNR/SSIM are
computed on exactly that 8-bit image against the 8-bit ground truth at native size (BT.601 Y and RGB,
dwgn/evaluation/metrics.py) and averaged over the images of a set. Nothing is resized; an input whose size differs
from its ground truth is an error; an unreadable image is skipped and listed (printed at the end and
under `skipped` in metrics.json), so a score never silently covers fewer images.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dwgn.data.datasets import DEMO_TEST_SETS, header_readable, test_scans
from dwgn.data.images import read_image, read_photo, save_photo
from dwgn.data.paths import DEMO_CHECKPOINT as DEFAULT_CHECKPOINT
from dwgn.errors import ArgumentParser, DataError
from dwgn.evaluation.metrics import all_metrics, psnr
from dwgn.evaluation.restore import DEFAULT_OVERLAP, DEFAULT_TILE, progress_bar, restore
from dwgn.io import atomic_path, write_text_atomic

PROTOCOL = "Y BT.601, 8-bit, native size"
PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
METRIC_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
PER_IMAGE_CSV = "per_image.csv"
READ_ERRORS = (ValueError, FileNotFoundError, OSError)  # what read_image raises for a bad file


# ---------------------------------------------------------------------------------------------- model
def load_checkpoint_model(path: str | Path | None, device: str) -> nn.Module:
    """The network of a checkpoint; the shipped demo checkpoint when path is None."""
    from dwgn.training.checkpoint import load_model

    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        how = ("it ships with the repository (a fresh clone has it), or train your own with `python train.py` "
               "and pass --checkpoint runs/finetune-tiny/best.pt") if path == DEFAULT_CHECKPOINT else \
              "check the path; runs write last.pt and best.pt into their run directory (runs/<stage>-<preset>/)"
        raise FileNotFoundError(f"checkpoint {path} not found: {how}")
    return load_model(path, device=device)


# --------------------------------------------------------------------------------------------- scoring
def _finite(x: float | None) -> float | None:
    """JSON has no inf: a set restored perfectly (PSNR inf) is written as null."""
    return x if x is not None and math.isfinite(x) else None


def evaluate_set(model: nn.Module, key: str, pairs: list[tuple[Path, Path]], out_dir: Path, *,
                 tile: int | None = None, self_ensemble: bool = False, crop_border: int = 0,
                 overlap: int = DEFAULT_OVERLAP) -> tuple[dict, list[dict]]:
    """Restore every input of a set into out_dir (PNG, same file stem) and score it against its gt.
    Returns (the set's metrics.json entry, one row per image)."""
    _refuse_collisions([inp for inp, _ in pairs], out_dir)
    rows, skipped = [], []
    for inp_path, gt_path in tqdm(pairs, desc=key, unit="img", disable=None):
        try:
            inp, gt = read_image(inp_path), read_image(gt_path)
        except READ_ERRORS as e:
            skipped.append((str(inp_path), str(e)))
            continue
        if inp.shape != gt.shape:
            raise DataError(f"input {inp_path} is {inp.shape[1]}x{inp.shape[0]} but its ground truth {gt_path} "
                            f"is {gt.shape[1]}x{gt.shape[0]}; scores are computed at native size, nothing is "
                            "resized: fix or remove this pair")
        name = inp_path.stem + ".png"
        restored = restore(model, inp, tile=tile, overlap=overlap, self_ensemble=self_ensemble)
        save_photo(out_dir / name, restored)
        scores = all_metrics(restored, gt, crop_border)  # the saved 8-bit image, as written
        rows.append({"set": key, "name": name, "input": str(inp_path), "gt": str(gt_path), **scores,
                     "input_psnr_y": psnr(inp, gt, True, crop_border)})
    entry = {"n": len(rows)}
    for k in METRIC_KEYS + ("input_psnr_y",):
        entry[k] = _finite(statistics.fmean(r[k] for r in rows)) if rows else None
    entry["skipped"] = [path for path, _ in skipped]
    entry["protocol"] = PROTOCOL if not crop_border else f"{PROTOCOL}, crop border {crop_border}"
    entry["synthetic"] = key.startswith("demo-") or key in DEMO_TEST_SETS
    entry["_reasons"] = skipped  # printed, not written
    return entry, rows


def _refuse_collisions(inputs: list[Path], out_dir: Path) -> None:
    """Two inputs that would be saved under one name (photo.jpg, photo.png) are refused before any is written."""
    by_name = {}
    for path in inputs:
        by_name.setdefault(path.stem + ".png", []).append(path)
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    if clashes:
        name, paths = next(iter(clashes.items()))
        raise DataError(f"{' and '.join(map(str, paths))} would both be saved as {out_dir / name}"
                        f"{f' (and {len(clashes) - 1} more such clash(es))' if len(clashes) > 1 else ''}; "
                        "rename one of them (nothing was written)")


def photo_files(source: Path) -> tuple[list[Path], list[Path]]:
    """(photos to restore, other files left out) of a folder, or of one photo. A folder without photos, and
    photos whose header cannot be read, are refused (DataError naming them) before anything is restored."""
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    else:
        raise FileNotFoundError(f"--input {source} does not exist; give a folder of photos or one photo "
                                f"({', '.join(PHOTO_EXTENSIONS)})")
    photos = [p for p in files if p.suffix.lower() in PHOTO_EXTENSIONS]
    if not photos:
        what = "is not a photo" if source.is_file() else "holds no photo" + (
            f" (only {len(files)} other file(s), e.g. {files[0].name})" if files else "")
        raise DataError(f"--input {source} {what}: test.py restores {', '.join(PHOTO_EXTENSIONS)} files"
                        f"{'' if source.is_file() else ' (hidden files are ignored)'}; give a folder of photos or a "
                        "photo")
    unreadable = [p for p in photos if not header_readable(p)]
    if unreadable:
        shown = ", ".join(map(str, unreadable[:5])) + (f" and {len(unreadable) - 5} more" if unreadable[5:] else "")
        raise DataError(f"cannot read {len(unreadable)} of the {len(photos)} photo(s) in --input {source} (corrupt, "
                        f"truncated or not an image): {shown}; replace or remove them, then rerun (nothing was "
                        "restored)")
    return photos, [p for p in files if p not in photos]


def restore_folder(model: nn.Module, source: Path, out_dir: Path, *, tile: int | None = None,
                   self_ensemble: bool = False, overlap: int = DEFAULT_OVERLAP,
                   overwrite: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """Restore every photo in `source` (a folder, or one photo; no ground truth) to out_dir/<stem>.png at its
    own size and in its own layout (gray stays gray, alpha and 16 bits are kept, EXIF orientation applied).
    Returns (written files, photos that could not be decoded (path, reason)). A folder without photos, unreadable
    headers, name clashes and (without `overwrite`) earlier outputs are refused before anything is written."""
    photos, _ = photo_files(Path(source))
    skipped: list[tuple[str, str]] = []
    _refuse_collisions(photos, out_dir)
    refuse_overwrite([out_dir / (p.stem + ".png") for p in photos], overwrite)
    written = []
    bar = progress_bar(photos, desc=f"restoring {Path(source).name}", unit="photo", interval=0)
    for path in bar:  # a line per photo, and under it one for the tiles of a large photo (every few seconds)
        bar.set_postfix_str(path.name)
        try:
            image = read_photo(path)
        except READ_ERRORS as e:
            skipped.append((str(path), str(e)))
            continue
        out = out_dir / (path.stem + ".png")
        save_photo(out, restore(model, image, tile=tile, overlap=overlap, self_ensemble=self_ensemble, progress=True))
        written.append(out)
    return written, skipped


def refuse_overwrite(outputs: list[Path], overwrite: bool) -> None:
    """Earlier results are never replaced silently: refuse (naming one) unless --overwrite."""
    existing = [p for p in outputs if p.exists()]
    if existing and not overwrite:
        raise DataError(f"{existing[0]} holds the result of an earlier run"
                        f"{f' ({len(existing) - 1} more files too)' if len(existing) > 1 else ''}; "
                        "pass --results NEW_DIR to keep it, or --overwrite to replace it")


# --------------------------------------------------------------------------------------------- reports
def write_metrics(results: dict[str, dict], results_dir: Path, rows: list[dict]) -> None:
    """metrics.json (docs/DESIGN.md §6), metrics.csv (one line per set), per_image.csv (one line per image)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    clean = {k: {f: v for f, v in e.items() if not f.startswith("_")} for k, e in results.items()}
    write_text_atomic(results_dir / "metrics.json", json.dumps(clean, indent=2) + "\n")
    # every file written whole or not at all: a killed run never leaves a half table next to a full one
    with atomic_path(results_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "n", *METRIC_KEYS, "input_psnr_y", "skipped", "synthetic", "protocol"])
        for key, e in clean.items():
            w.writerow([key, e["n"], *(e[k] for k in METRIC_KEYS), e["input_psnr_y"], len(e["skipped"]),
                        e["synthetic"], e["protocol"]])
    with atomic_path(results_dir / PER_IMAGE_CSV) as tmp, open(tmp, "w", newline="") as f:
        fields = ["set", "name", "input", "gt", *METRIC_KEYS, "input_psnr_y"]
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def format_table(results: dict[str, dict]) -> str:
    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    lines = [f"{'set':<22}{'n':>6}{'PSNR-Y':>9}{'SSIM-Y':>8}{'PSNR-RGB':>10}{'SSIM-RGB':>10}{'input':>8}  protocol"]
    for key, e in results.items():
        label = e["protocol"] + ("; SYNTHETIC demo data" if e["synthetic"] else "")
        lines.append(f"{key:<22}{e['n']:>6}{num(e['psnr_y'], '.2f'):>9}{num(e['ssim_y'], '.4f'):>8}"
                     f"{num(e['psnr_rgb'], '.2f'):>10}{num(e['ssim_rgb'], '.4f'):>10}"
                     f"{num(e['input_psnr_y'], '.2f'):>8}  {label}")
    lines.append("(input: PSNR-Y of the unrestored input against its ground truth)")
    return "\n".join(lines)


def profile(model: nn.Module, sizes: list[int], repeats: int = 3) -> list[dict]:
    """Parameters, MACs and median restore() latency (whole image, no tiling) per square image size."""
    from dwgn.profile import count

    device = next(model.parameters()).device
    rows = []
    for size in sizes:
        params, macs = count(model, size)
        image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        restore(model, image, tile=0)  # warm-up: allocator, cuDNN algorithm choice
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            restore(model, image, tile=0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
        rows.append({"size": size, "params": params, "macs": macs, "latency_s": statistics.median(times),
                     "device": str(device)})
    return rows


# ------------------------------------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python test.py", description="Evaluate a DwGN checkpoint on test sets, "
                                "restore a folder of photos (--input), or profile the network (--profile). "
                                "Earlier results are kept: a run that would replace them stops unless --overwrite.")
    p.add_argument("--checkpoint", default=None, help=f"default: the demo checkpoint {DEFAULT_CHECKPOINT.name}")
    p.add_argument("--test-set", nargs="+", default=None, metavar="NAME_OR_DIR",
                   help="snow100k-s snow100k-l outdoor-rain raindrop-a raindrop-b demo, or paired folders "
                        "(default: demo, unless --input or --profile is given)")
    p.add_argument("--input", default=None, help="restore every photo in this folder (or this one photo; "
                   f"{' '.join(PHOTO_EXTENSIONS)}; hidden and other files are left out); no ground truth. A folder "
                   "without photos, or with a photo whose header cannot be read, is refused before anything is "
                   "restored; a photo that fails to decode later is left out, the others restored, and the run "
                   "ends with an error naming it (exit status 2)")
    p.add_argument("--results", default="results", help="output folder (default: results)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --results")
    p.add_argument("--data-root", default=None, help="where the named benchmark sets live (default: datasets/)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--tile", type=int, default=None,
                   help="0: never tile (the whole image at once); N > 0: N x N tiles (rounded up to a multiple of "
                        f"64); default: tiles of {DEFAULT_TILE} above one megapixel; negative values are refused")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"tile overlap in pixels, from 0 to below the tile side (default {DEFAULT_OVERLAP})")
    p.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (x8 time)")
    p.add_argument("--crop-border", type=int, default=0, help="pixels cropped from each side before scoring (>= 0)")
    p.add_argument("--profile", action="store_true", help="print parameters, MACs and latency per image size")
    p.add_argument("--profile-sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every block (regional, fullgraph) before restoring; needs --tile 0")
    p.add_argument("--figure", default=None, metavar="PATH",
                   help="also draw the results figure here (e.g. figures/results.png); after the demo sets it is "
                        "always drawn into --results")
    return p


def argument_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the numbers given (checked before the model loads), or None."""
    if args.tile is not None and args.tile < 0:
        return f"--tile {args.tile}: give 0 (never tile) or a tile side in pixels (e.g. --tile {DEFAULT_TILE})"
    tile = DEFAULT_TILE if args.tile is None else args.tile
    if args.overlap < 0 or (tile and args.overlap >= tile):
        return (f"--overlap {args.overlap}: tiles of {tile} px overlap by 0 to {tile - 1} px "
                f"(e.g. --overlap {min(DEFAULT_OVERLAP, tile // 4)}, or a larger --tile)")
    if args.crop_border < 0:
        return f"--crop-border {args.crop_border}: give 0 or more pixels"
    bad = [size for size in args.profile_sizes if size <= 0]
    if bad:
        return f"--profile-sizes {' '.join(map(str, bad))}: give image sides in pixels above 0 (e.g. 256 512)"
    return None


def _run_profile(model: nn.Module, args: argparse.Namespace, results_dir: Path) -> list[dict]:
    refuse_overwrite([results_dir / "profile.json"], args.overwrite)
    rows = profile(model, args.profile_sizes)
    print(f"{'size':>6}{'params':>12}{'GMACs':>10}{'latency':>10}  device")
    for r in rows:
        print(f"{r['size']:>6}{r['params']:>12,}{r['macs'] / 1e9:>10.2f}{r['latency_s']:>9.3f}s  {r['device']}")
    write_text_atomic(results_dir / "profile.json", json.dumps(rows, indent=2) + "\n")
    return rows


def _run_test_sets(model: nn.Module, names: list[str], args: argparse.Namespace, results_dir: Path,
                   opts: dict) -> tuple[dict, list[tuple[str, str]]]:
    scans = test_scans(names, Path(args.data_root) if args.data_root else None)
    refuse_overwrite([results_dir / "metrics.json", *(results_dir / key for key in scans)], args.overwrite)
    results, rows, skipped = {}, [], []
    for key, scan in scans.items():
        entry, set_rows = evaluate_set(model, key, scan.pairs, results_dir / key, crop_border=args.crop_border, **opts)
        dropped = [(str(p), f"{kind}, left out while pairing") for kind, paths in scan.skipped().items() for p in paths]
        entry["skipped"] += [path for path, _ in dropped]
        entry["_reasons"] += dropped
        results[key], rows = entry, rows + set_rows
        skipped += entry["_reasons"]
    write_metrics(results, results_dir, rows)
    print(format_table(results))
    print(f"restored images in {results_dir}/<set>/, scores in {results_dir / 'metrics.json'} and metrics.csv")
    if any(e["synthetic"] for e in results.values()):
        from dwgn.evaluation.results_figure import draw

        for out in [results_dir / "results.png"] + ([Path(args.figure)] if args.figure else []):
            print(f"figure: {draw(results_dir, out)}")
    return results, skipped


def run(argv: list[str] | None = None) -> dict:
    """Returns {"metrics": {...}, "restored": [...], "skipped": [...], "profile": [...]} for callers/tests.
    Raises DataError (before any work) for a folder without photos or with unreadable ones, after restoring
    the others for photos that failed to decode, and for a test set of which nothing was scored."""
    parser = get_parser()
    args = parser.parse_args(argv)
    bad = argument_error(args)
    if bad:
        parser.error(bad)
    if args.compile and args.tile != 0:
        parser.error("--compile applies to whole-image inference only (tiled inference records and replays "
                     "the global pools); add --tile 0, or drop --compile")
    if args.input:  # a folder without photos, or an unreadable one, is refused before the model loads
        _, others = photo_files(Path(args.input))
        if others:
            shown = ", ".join(p.name for p in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            print(f"left out {len(others)} file(s) without a photo extension: {shown}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = False  # same input -> bitwise same output
    torch.backends.cudnn.deterministic = True
    model = load_checkpoint_model(args.checkpoint, device)
    if args.compile:
        from dwgn.training.acceleration import compile_blocks

        compile_blocks(model)
    results_dir = Path(args.results)
    opts = {"tile": args.tile, "overlap": args.overlap, "self_ensemble": args.self_ensemble}
    summary: dict = {"metrics": {}, "restored": [], "skipped": [], "profile": []}
    if args.profile:
        summary["profile"] = _run_profile(model, args, results_dir)
    if args.input:
        source = Path(args.input)
        out_dir = results_dir / source.resolve().name if source.is_dir() else results_dir
        written, failed = restore_folder(model, source, out_dir, overwrite=args.overwrite, **opts)
        if written:
            print(f"restored {len(written)} photo(s) into {out_dir}")
        summary["restored"] = written
    names = args.test_set if args.test_set else (None if (args.input or args.profile) else ["demo"])
    if names:
        summary["metrics"], skipped = _run_test_sets(model, names, args, results_dir, opts)
        summary["skipped"] += skipped
    if summary["skipped"]:
        print(f"SKIPPED {len(summary['skipped'])} file(s), not restored or scored:")
        for path, reason in summary["skipped"]:
            print(f"  {path}: {reason}")
    if args.input and failed:
        summary["skipped"] += failed
        more = f" (and {len(failed) - 1} more: {', '.join(path for path, _ in failed[1:])})" if len(failed) > 1 else ""
        raise DataError(f"{failed[0][1]}{more}; "
                        + (f"the other {len(written)} photo(s) were restored into {out_dir}" if written else
                           "nothing was restored"))
    empty = [key for key, e in summary["metrics"].items() if e["n"] == 0]
    if empty:
        raise DataError(f"nothing scored in test set(s) {', '.join(empty)}: every pair was skipped (listed above)")
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python test.py ...`: 0 when something was restored or scored; errors go to dwgn.errors.run_main."""
    run(argv)
    return 0
