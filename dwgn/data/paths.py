"""Where the data lives: the repository's `datasets/` unless DWGN_DATA / DWGN_DEMO say otherwise."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT: Path = Path(os.environ.get("DWGN_DATA", REPO / "datasets"))
DEMO_ROOT: Path = Path(os.environ.get("DWGN_DEMO", REPO / "datasets" / "demo"))
