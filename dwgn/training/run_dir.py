"""The run directory: one config per directory, resume or refuse, log.jsonl, and the saved RNG state.

A run directory (`--out`, else runs/<stage>-<preset>) holds config.yaml, log.jsonl, TensorBoard events,
last.pt (everything needed to resume) and, with validation, best.pt. Rerunning the same command resumes
from last.pt; a larger `--steps` extends the run; a change to any other key that shapes the result is
refused, naming the changed keys and the two ways on (`--out NEW_DIR`, or `--restart`, which moves the old
directory aside under a dated name and starts over).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dwgn.errors import DataError
from dwgn.training.checkpoint import load_checkpoint
from dwgn.training.config import ConfigError, TrainConfig
from dwgn.training.cli import config_diff, upgrade_stored_config

# Keys that may change between the runs of one directory: where and how fast it runs, how often it logs.
# `steps` is checked on its own (a larger value extends the run).
FREE_KEYS = ("steps", "out", "restart", "device", "num_workers", "log_every", "val_every", "save_every",
             "keep_every", "compile", "cuda_graphs")


def run_dir_for(cfg: TrainConfig, stage_name: str) -> Path:
    """`--out`, else runs/<stage>-<preset>."""
    return Path(cfg.out or f"runs/{stage_name}-{cfg.preset}")


def dated_name(run_dir: Path) -> Path:
    """Where `--restart` keeps an old run: <run_dir>.<YYYYmmdd-HHMMSS> beside it (a counter if taken)."""
    base = run_dir.with_name(f"{run_dir.name}.{time.strftime('%Y%m%d-%H%M%S')}")
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def restart(run_dir: Path) -> Path | None:
    """Move an existing run directory aside under a dated name; returns where it went (None if none)."""
    if not run_dir.exists():
        return None
    target = dated_name(run_dir)
    run_dir.rename(target)
    return target


def open_run(cfg: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The run's last.pt if it holds a run of this same config (None for a fresh run); refuses another config."""
    last = run_dir / "last.pt"
    if not last.exists():
        return None
    ckpt = load_checkpoint(last)
    ways = (f"Two ways on: --out NEW_DIR for a new run beside it, or --restart to start over in {run_dir} "
            f"(the old run is kept as {run_dir}.<date-time>)")
    # the stored config read in today's shape; a key only one side has counts as changed
    changed = [f"{key}: {old!r} -> {new!r}" for key, (old, new) in
               config_diff(upgrade_stored_config(ckpt.get("config") or {}), cfg).items() if key not in FREE_KEYS]
    if changed:
        raise ConfigError(f"{run_dir} holds a run of another config ({'; '.join(changed)}). {ways}")
    done = int(ckpt["step"])
    if cfg.steps < done:
        raise ConfigError(f"{run_dir} has already trained {done} steps, more than --steps {cfg.steps}. "
                          f"Give --steps {done} or more to go on, or: {ways}")
    return ckpt


# ---------------------------------------------------------------- log.jsonl


def read_log_lines(path: Path, note: bool = True) -> list[dict[str, Any]]:
    """The records of a log.jsonl. A torn last line (a run killed while writing it) is dropped with a
    note; a bad line before the end is an error naming it."""
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                if note:
                    print(f"note: dropped the torn last line {n} of {path} (a run killed while writing it)")
                break
            raise DataError(f"{path} line {n} is not JSON ({err}); was the file edited by hand? "
                            "Remove that line and rerun") from None
    return records


class RunLog:
    """log.jsonl + TensorBoard scalars, written by rank 0 only. On resume, lines past the resumed step
    (written by the killed run after its last checkpoint) are dropped so the log matches the weights."""

    def __init__(self, run_dir: Path, start: int, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [r for r in read_log_lines(self.path) if r.get("step", 0) <= start]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        from torch.utils.tensorboard import SummaryWriter  # imported late: slow import, rank 0 only

        self.writer = SummaryWriter(str(run_dir), purge_step=start if start else None)

    def write(self, record: dict[str, Any], prefix: str = "train") -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------- random number generators


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) global RNG states as tensors and plain types (weights_only safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of rng_state (CUDA states only when the same number of devices is present)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


__all__ = ["FREE_KEYS", "RunLog", "open_run", "read_log_lines", "restart", "rng_state",
           "run_dir_for", "set_rng_state"]
