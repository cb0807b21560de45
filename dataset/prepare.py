"""Build the embedded demo set (--demo), draw the weather figure (--figure), check a downloaded set (--check DIR).

No logic here: see dwgn/data/prepare.py. Layouts and sources: dataset/README.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dwgn.errors import run_main  # noqa: E402
from dwgn.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    run_main(main, "dataset/prepare.py")
