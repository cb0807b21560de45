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
from PIL import Image
from torch import nn
from tqdm import tqdm

from dwgn.data.datasets import DEMO_TEST_SETS, test_sets
from dwgn.data.images import read_image
from dwgn.data.paths import DEMO_CHECKPOINT as DEFAULT_CHECKPOINT
from dwgn.evaluation.metrics import all_metrics, psnr
from dwgn.io import atomic_path, write_text_atomic
from dwgn.evaluation.restore import DEFAULT_OVERLAP, restore

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


def save_png(path: Path, image: np.ndarray) -> None:
    """Write an 8-bit PNG (RGB, RGBA or gray) atomically, so an interrupted run leaves no half image."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def read_photo(path: Path) -> np.ndarray:
    """A user's photo: HxWx3 uint8, or HxWx4 when it has an alpha channel (kept through restoration)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                return np.array(im.convert("RGBA"), dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return read_image(path)


# --------------------------------------------------------------------------------------------- scoring
def _finite(x: float | None) -> float | None:
    """JSON has no inf: a set restored perfectly (PSNR inf) is written as null."""
    return x if x is not None and math.isfinite(x) else None


def evaluate_set(model: nn.Module, key: str, pairs: list[tuple[Path, Path]], out_dir: Path, *,
                 tile: int | None = None, self_ensemble: bool = False, crop_border: int = 0,
                 overlap: int = DEFAULT_OVERLAP) -> tuple[dict, list[dict]]:
    """Restore every input of a set into out_dir (PNG, same file stem) and score it against its gt.
    Returns (the set's metrics.json entry, one row per image)."""
    rows, skipped, names = [], [], {}
    for inp_path, gt_path in tqdm(pairs, desc=key, unit="img"):
        try:
            inp, gt = read_image(inp_path), read_image(gt_path)
        except READ_ERRORS as e:
            skipped.append((str(inp_path), str(e)))
            continue
        if inp.shape != gt.shape:
            raise ValueError(f"input {inp_path} is {inp.shape[1]}x{inp.shape[0]} but its ground truth {gt_path} "
                             f"is {gt.shape[1]}x{gt.shape[0]}; scores are computed at native size, nothing is "
                             "resized: fix or remove this pair")
        name = inp_path.stem + ".png"
        if name in names:
            raise ValueError(f"inputs {names[name]} and {inp_path} would both be saved as {out_dir / name}; "
                             "rename one")
        names[name] = inp_path
        restored = restore(model, inp, tile=tile, overlap=overlap, self_ensemble=self_ensemble)
        save_png(out_dir / name, restored)
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


def restore_folder(model: nn.Module, folder: Path, out_dir: Path, *, tile: int | None = None,
                   self_ensemble: bool = False, overlap: int = DEFAULT_OVERLAP) -> tuple[list[Path], list[tuple[str, str]]]:
    """Restore every photo in `folder` (no ground truth) to out_dir/<stem>.png at its own size.
    Returns (written files, skipped (path, reason)); files that are not photos are skipped too, by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--input {folder} is not a folder; give a folder of photos "
                                f"({', '.join(PHOTO_EXTENSIONS)})")
    written, skipped = [], []
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for path in tqdm(files, desc=folder.name, unit="img"):
        if path.suffix.lower() not in PHOTO_EXTENSIONS:
            skipped.append((str(path), f"not a photo extension ({', '.join(PHOTO_EXTENSIONS)})"))
            continue
        try:
            image = read_photo(path)
        except READ_ERRORS as e:
            skipped.append((str(path), str(e)))
            continue
        out = out_dir / (path.stem + ".png")
        if out in written:
            raise ValueError(f"two photos in {folder} would both be saved as {out}; rename one")
        save_png(out, restore(model, image, tile=tile, overlap=overlap, self_ensemble=self_ensemble))
        written.append(out)
    return written, skipped


# --------------------------------------------------------------------------------------------- reports
def write_metrics(results: dict[str, dict], results_dir: Path, rows: list[dict]) -> None:
    """metrics.json (docs/DESIGN.md §6), metrics.csv (one line per set), per_image.csv (one line per image)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    clean = {k: {f: v for f, v in e.items() if not f.startswith("_")} for k, e in results.items()}
    write_text_atomic(results_dir / "metrics.json", json.dumps(clean, indent=2) + "\n")
    with open(results_dir / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "n", *METRIC_KEYS, "input_psnr_y", "skipped", "synthetic", "protocol"])
        for key, e in clean.items():
            w.writerow([key, e["n"], *(e[k] for k in METRIC_KEYS), e["input_psnr_y"], len(e["skipped"]),
                        e["synthetic"], e["protocol"]])
    with open(results_dir / PER_IMAGE_CSV, "w", newline="") as f:
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
    p = argparse.ArgumentParser(prog="python test.py", description="Evaluate a DwGN checkpoint on test sets, "
                                "restore a folder of photos (--input), or profile the network (--profile).")
    p.add_argument("--checkpoint", default=None, help=f"default: the demo checkpoint {DEFAULT_CHECKPOINT.name}")
    p.add_argument("--test-set", nargs="+", default=None, metavar="NAME_OR_DIR",
                   help="snow100k-s snow100k-l outdoor-rain raindrop-a raindrop-b demo, or paired folders "
                        "(default: demo, unless --input or --profile is given)")
    p.add_argument("--input", default=None, help="restore every photo in this folder (no ground truth)")
    p.add_argument("--results", default="results", help="output folder (default: results)")
    p.add_argument("--data-root", default=None, help="where the named benchmark sets live (default: datasets/)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile side in pixels (rounded up to a multiple of 64); 0: never tile; "
                        "default: tiles of 512 above one megapixel")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in pixels")
    p.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (x8 time)")
    p.add_argument("--crop-border", type=int, default=0, help="pixels cropped from each side before scoring")
    p.add_argument("--profile", action="store_true", help="print parameters, MACs and latency per image size")
    p.add_argument("--profile-sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--figures", default="figures", help="where results.png goes after the demo sets")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Returns {"metrics": {...}, "restored": [...], "skipped": [...], "profile": [...]} for callers/tests."""
    args = get_parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = False  # same input -> bitwise same output
    torch.backends.cudnn.deterministic = True
    model = load_checkpoint_model(args.checkpoint, device)
    results_dir = Path(args.results)
    opts = {"tile": args.tile, "overlap": args.overlap, "self_ensemble": args.self_ensemble}
    summary: dict = {"metrics": {}, "restored": [], "skipped": [], "profile": []}

    if args.profile:
        summary["profile"] = rows = profile(model, args.profile_sizes)
        print(f"{'size':>6}{'params':>12}{'GMACs':>10}{'latency':>10}  device")
        for r in rows:
            print(f"{r['size']:>6}{r['params']:>12,}{r['macs'] / 1e9:>10.2f}{r['latency_s']:>9.3f}s  {r['device']}")
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / "profile.json").write_text(json.dumps(rows, indent=2) + "\n")

    if args.input:
        folder = Path(args.input)
        written, skipped = restore_folder(model, folder, results_dir / folder.resolve().name, **opts)
        print(f"restored {len(written)} photo(s) into {results_dir / folder.resolve().name}")
        summary["restored"], summary["skipped"] = written, skipped

    names = args.test_set if args.test_set else (None if (args.input or args.profile) else ["demo"])
    if names:
        sets = test_sets(names, Path(args.data_root) if args.data_root else None)
        results, rows = {}, []
        for key, pairs in sets.items():
            results[key], set_rows = evaluate_set(model, key, pairs, results_dir / key,
                                                  crop_border=args.crop_border, **opts)
            rows += set_rows
            summary["skipped"] += results[key]["_reasons"]
        write_metrics(results, results_dir, rows)
        print(format_table(results))
        print(f"restored images in {results_dir}/<set>/, scores in {results_dir / 'metrics.json'} and metrics.csv")
        summary["metrics"] = results
        if any(e["synthetic"] for e in results.values()):
            from dwgn.evaluation.results_figure import draw

            out = draw(results_dir, Path(args.figures) / "results.png")
            print(f"figure: {out}")

    if summary["skipped"]:
        print(f"SKIPPED {len(summary['skipped'])} unreadable file(s), not scored:")
        for path, reason in summary["skipped"]:
            print(f"  {path}: {reason}")
    return summary
