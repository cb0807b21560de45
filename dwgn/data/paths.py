"""Where things live: the data under the repository's `datasets/` unless DWGN_DATA / DWGN_DEMO say otherwise,
and the shipped demo checkpoint (the default of `test.py` and `python -m dwgn.analysis`)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT: Path = Path(os.environ.get("DWGN_DATA", REPO / "datasets"))
DEMO_ROOT: Path = Path(os.environ.get("DWGN_DEMO", REPO / "datasets" / "demo"))
DEMO_CHECKPOINT: Path = REPO / "checkpoints" / "dwgn-small-demo.safetensors"
