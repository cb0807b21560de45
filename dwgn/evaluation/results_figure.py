"""Results figure: per weather (test set), input | restored | ground truth crops, and per-set PSNR bars;
and (`draw_clean`) clean photos in and out, for the held-out check's clean-photo measurement.

    python -m dwgn.evaluation.results_figure RESULTS_DIR [--out PNG]    (default RESULTS_DIR/results.png)

Reads what test.py wrote: RESULTS_DIR/metrics.json, per_image.csv and the restored PNGs. For each set
the image shown is the one with the median restored PSNR-Y (representative, not the best one).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from dwgn.errors import ArgumentParser, DataError
from dwgn.data.images import read_image  # noqa: E402
from dwgn.data.transforms import center_crop  # noqa: E402
from dwgn.io import save_figure  # noqa: E402

CROP = 192  # side of the shown crop, in pixels of the native image (no resizing)


def _median_row(rows: list[dict]) -> dict:
    ordered = sorted(rows, key=lambda r: float(r["psnr_y"]))
    return ordered[len(ordered) // 2]


def draw(results_dir: str | Path, out: str | Path) -> Path:
    results_dir, out = Path(results_dir), Path(out)
    metrics_path, rows_path = results_dir / "metrics.json", results_dir / "per_image.csv"
    for p in (metrics_path, rows_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: run `python test.py --results {results_dir}` first")
    metrics = json.loads(metrics_path.read_text())
    with open(rows_path, newline="") as f:
        per_set: dict[str, list[dict]] = {}
        for row in csv.DictReader(f):
            per_set.setdefault(row["set"], []).append(row)
    keys = [k for k in metrics if per_set.get(k)]
    if not keys:
        raise DataError(f"{results_dir} holds no scored images to draw")

    fig = plt.figure(figsize=(9.5, 2.2 * len(keys) + 0.7))
    grid = fig.add_gridspec(len(keys), 4, width_ratios=[1, 1, 1, 1.5])
    for i, key in enumerate(keys):
        row = _median_row(per_set[key])
        images = [read_image(row["input"]), read_image(results_dir / key / row["name"]), read_image(row["gt"])]
        titles = [f"input  {float(row['input_psnr_y']):.2f} dB", f"restored  {float(row['psnr_y']):.2f} dB",
                  "ground truth"]
        for j, (image, title) in enumerate(zip(images, titles)):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(center_crop(image, min(CROP, *image.shape[:2])), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title, fontsize=9)
            if j == 0:
                ax.set_ylabel(key, fontsize=10)

    bars = fig.add_subplot(grid[:, 3])
    ys = np.arange(len(keys))
    before = [metrics[k]["input_psnr_y"] or 0.0 for k in keys]
    after = [metrics[k]["psnr_y"] or 0.0 for k in keys]
    bars.barh(ys - 0.2, before, height=0.4, color="0.7", label="input")
    bars.barh(ys + 0.2, after, height=0.4, color="tab:blue", label="restored")
    for y, v in zip(ys, after):
        bars.text(v, y + 0.2, f" {v:.2f}", va="center", fontsize=8)
    bars.set_yticks(ys, [f"{k} (n={metrics[k]['n']})" for k in keys], fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("PSNR-Y (dB), mean over the set")
    bars.legend(loc="lower right", fontsize=8)
    synthetic = any(metrics[k].get("synthetic") for k in keys)
    fig.suptitle(f"DwGN restoration, {metrics[keys[0]]['protocol']}"
                 + ("  (SYNTHETIC demo data)" if synthetic else ""), fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def draw_clean(rows: list[tuple[str, np.ndarray, np.ndarray, float]], out: str | Path, title: str,
               gain: float = 10.0) -> Path:
    """Clean photos in, restored out: one row per photo, lowest PSNR-Y first: the photo, the model's output and
    |output - photo| times `gain` (black where the model left the photo alone). `rows`: (name, photo,
    restored, PSNR-Y), uint8 H x W x 3 (`python -m dwgn.evaluation.heldout --figure`)."""
    if not rows:
        raise ValueError("draw_clean: no photos to draw")
    rows = sorted(rows, key=lambda r: r[3])
    fig, axes = plt.subplots(len(rows), 3, figsize=(8.4, 2.2 * len(rows) + 0.6), squeeze=False)
    for (name, photo, restored, score), ax in zip(rows, axes):
        diff = np.clip(np.abs(restored.astype(np.float32) - photo.astype(np.float32)).max(axis=2) * gain, 0, 255)
        panels = ((photo, f"{name}: clean in"), (restored, f"restored, PSNR-Y {score:.2f} dB"),
                  (diff.astype(np.uint8), f"|restored - clean| x {gain:g}"))
        for a, (img, label) in zip(ax, panels):
            a.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            a.set_title(label, fontsize=8)
            a.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))  # half an inch on top for the title
    return save_figure(fig, Path(out), dpi=100)


def main(argv: list[str] | None = None) -> Path:
    parser = ArgumentParser(prog="python -m dwgn.evaluation.results_figure",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", help="the --results folder test.py wrote")
    parser.add_argument("--out", default=None, help="default: RESULTS_DIR/results.png (e.g. figures/results.png)")
    args = parser.parse_args(argv)
    out = draw(args.results_dir, args.out or Path(args.results_dir) / "results.png")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    from dwgn.errors import run_main

    run_main(main, "python -m dwgn.evaluation.results_figure")
