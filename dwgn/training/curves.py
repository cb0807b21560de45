"""Draw a run's training curves from its log.jsonl: loss, learning rate and validation PSNR.

    python -m dwgn.curves RUN_DIR [--out PNG]    (default RUN_DIR/curves.png; figures/ only when named)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from dwgn.errors import ArgumentParser, DataError  # noqa: E402
from dwgn.io import save_figure  # noqa: E402
from dwgn.training.run_dir import read_log_lines  # noqa: E402


def read_log(run_dir: Path) -> list[dict]:
    """The records of RUN_DIR/log.jsonl (a torn last line from a killed run is dropped with a note)."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; give a run directory written by train.py or pre-training.py")
    return read_log_lines(path)


def curves_title(run_dir: Path, records: list[dict]) -> str:
    """`<run>: 400 steps` for a finished run; `<run>: step 150 of 400` for one still going (or stopped), the
    total read from the run's config.yaml; without one, the last step logged."""
    done = max(int(r["step"]) for r in records)
    config = run_dir / "config.yaml"
    total = yaml.safe_load(config.read_text()).get("steps") if config.is_file() else None
    name = run_dir.resolve().name
    return f"{name}: step {done} of {total}" if total and total != done else f"{name}: {done} steps"


def plot_curves(run_dir: Path, out: Path) -> Path:
    records = read_log(run_dir)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_psnr" in r]
    if not train:
        raise DataError(f"{run_dir / 'log.jsonl'} has no training lines yet; train a few steps first")
    extra = sorted({k for r in train for k in r} - {"step", "loss", "lr", "images_per_s"})
    panels = 2 + bool(val) + bool(extra)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train])
    axes[0].set(title="training L1 loss", xlabel="step", yscale="log")
    axes[1].plot(steps, [r["lr"] for r in train], color="tab:orange")
    axes[1].set(title="learning rate", xlabel="step")
    i = 2
    if val:
        axes[i].plot([r["step"] for r in val], [r["val_psnr"] for r in val], "o-", color="tab:green")
        axes[i].set(title="validation PSNR (RGB, dB)", xlabel="step")
        i += 1
    if extra:  # stage scalars, e.g. Stage 1's generator loss and mask means
        for key in extra:
            axes[i].plot([r["step"] for r in train if key in r], [r[key] for r in train if key in r], label=key)
        axes[i].set(title="stage scalars", xlabel="step")
        axes[i].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(curves_title(run_dir, records))
    fig.tight_layout()
    return save_figure(fig, out, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dwgn.curves", description="Draw a run's training curves.")
    parser.add_argument("run_dir", type=Path, help="run directory holding log.jsonl")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the figure goes (default: RUN_DIR/curves.png; e.g. figures/training_curves.png)")
    args = parser.parse_args(argv)
    print(f"wrote {plot_curves(args.run_dir, args.out or args.run_dir / 'curves.png')}")
    return 0
