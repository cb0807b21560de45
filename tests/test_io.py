"""Atomic writes: the target is replaced whole or not at all, and no temporary file is left behind."""
from pathlib import Path

import pytest

from dwgn.io import atomic_path, write_text_atomic


def test_write_replaces_the_file_and_leaves_only_it(tmp_path: Path):
    out = tmp_path / "sub" / "metrics.json"
    write_text_atomic(out, "old")
    write_text_atomic(out, "new")
    assert out.read_text() == "new" and [p.name for p in out.parent.iterdir()] == ["metrics.json"]


def test_a_failure_mid_write_keeps_the_previous_file(tmp_path: Path):
    out = write_text_atomic(tmp_path / "list.txt", "complete\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert out.read_text() == "complete\n" and [p.name for p in tmp_path.iterdir()] == ["list.txt"]


def test_the_temporary_name_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path):
    with atomic_path(tmp_path / "figure.png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".")
        tmp.write_bytes(b"png")
    assert (tmp_path / "figure.png").read_bytes() == b"png"
