"""Atomic file writes: a crash or Ctrl-C mid-write leaves the previous file (or none), never half a file.

Every writer of a checkpoint, list file, JSON result, PNG or figure goes through `atomic_path`: it hands out
a temporary name beside the target (same folder, so the final `os.replace` is one rename on one file system)
and renames it over the target only when the body finished without an exception.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """`with atomic_path(out) as tmp: write(tmp)`: `tmp` replaces `out` on success and is removed on failure.

    The temporary name is `.<stem>.tmp<pid><suffix>`: hidden, unique per process, and it keeps the suffix,
    so writers that pick the format from it (PIL, matplotlib) write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # the body raised (or wrote nothing usable): leave no temporary file behind
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """Write a matplotlib figure atomically (the format from the suffix) and close it; returns `path`."""
    import matplotlib.pyplot as plt  # late: only the figure commands pay for matplotlib

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path


__all__ = ["atomic_path", "save_figure", "write_text_atomic"]
