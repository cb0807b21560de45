"""The embedded all-weather demo set: packaged photos + dwgn.data.weather, in the real benchmarks' layouts.

<root>/
  manifest.json                      says SYNTHETIC, the seed, photos and counts
  train/input/, train/gt/, train/allweather.txt     Allweather layout (same names in input/ and gt/)
  test/demo-snow/synthetic/, gt/                    Snow100K layout (same names)
  test/demo-rainfog/input/im_0301_s80_a04.png -> gt/im_0301.png   Outdoor-Rain Test1 naming
  test/demo-raindrop/data/N_rain.png -> gt/N_clean.png             RainDrop test_a naming
  test/demo-rain/input/, gt/ ; test/demo-haze/input/, gt/           plain paired folders

Training crops come only from the train photos and test crops only from the test photos
(dwgn.data.photos). The train photos are the packaged ones plus, when `python dataset/fetch_photos.py`
has been run, the fetched train photos (dwgn.data.photo_sources; its held-out photos are never
used here). A share CLEAN_SHARE of the training pairs are clean -> clean (named clean_NNNN.png), so
the model learns to leave a clean photo alone. Every sample has its own generator, seeded from (seed, split, weather, index), so
the set is identical on every machine for a given seed.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dwgn.data.images import read_image
from dwgn.data.layouts import OUTDOOR_RAIN_TEST_SCENES
from dwgn.data.photo_sources import fetched_photos
from dwgn.data.photos import packaged_photos
from dwgn.data.weather import WEATHERS, synthesize
from dwgn.io import save_figure

DEMO_VERSION = 2
CLEAN_SHARE = 0.15  # fraction of the training pairs that are clean -> clean
# Test image sizes (H, W): mostly 256x256, plus two odd sizes so padding/cropping paths are exercised.
TEST_SIZES = [(256, 256)] * 10 + [(197, 301), (300, 229)]
_SPLIT_ID = {"train": 0, "test": 1}
_CLEAN_ID = len(WEATHERS)  # generator stream of the clean -> clean pairs


def read_manifest(root: Path) -> dict | None:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _rng(seed: int, split: str, weather: str, index: int) -> np.random.Generator:
    stream = _CLEAN_ID if weather == "clean" else WEATHERS.index(weather)
    return np.random.default_rng([seed, _SPLIT_ID[split], stream, index])


def train_photo_paths() -> list[Path]:
    """The demo's training photos: the packaged ones, then the fetched ones if present."""
    return packaged_photos("train") + fetched_photos("train")


def default_train_per_weather(n_train_photos: int) -> int:
    """120 training pairs per weather from the 7 packaged photos alone, 400 when fetched photos add scenes."""
    return 400 if n_train_photos > len(packaged_photos("train")) else 120


def clean_pairs(per_weather: int, share: float = CLEAN_SHARE) -> int:
    """How many clean -> clean pairs make `share` of a training set with `per_weather` pairs per weather."""
    return round(share / (1.0 - share) * per_weather * len(WEATHERS))


def _crop(photo: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    ph, pw = photo.shape[:2]
    if ph < h or pw < w:  # never happens with the packaged photos; kept safe for other sources
        photo = cv2.resize(photo, (max(w, pw), max(h, ph)), interpolation=cv2.INTER_CUBIC)
        ph, pw = photo.shape[:2]
    top, left = int(rng.integers(0, ph - h + 1)), int(rng.integers(0, pw - w + 1))
    return photo[top:top + h, left:left + w]


def _write(path: Path, img: np.ndarray) -> None:
    """Write an RGB image (uint8, or float in [0, 1]) as PNG (fast compression)."""
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")


def _train_name(weather: str, j: int) -> str:
    if weather == "rainfog":  # Outdoor-Rain training naming, 3 pairs per scene
        scene = j // 3 + 1
        if scene >= OUTDOOR_RAIN_TEST_SCENES.start:  # past 900 pairs: skip the test scenes 301-350, which every
            scene += len(OUTDOOR_RAIN_TEST_SCENES)   # training scan removes (they would be built, then dropped)
        return f"im_{scene:04d}_s{80 + 10 * (j % 3)}_a{4 + j % 3:02d}.png"
    return f"{weather}_{j:04d}.png"


def _build_train(root: Path, photos: list[np.ndarray], per_weather: int, n_clean: int, seed: int,
                 bar: tqdm) -> int:
    lines = []
    for weather in (*WEATHERS, "clean"):
        for j in range(n_clean if weather == "clean" else per_weather):
            rng = _rng(seed, "train", weather, j)
            photo = photos[int(rng.integers(0, len(photos)))]
            clean = _crop(photo, int(rng.integers(128, 257)), int(rng.integers(128, 257)), rng)
            name = _train_name(weather, j)
            _write(root / "input" / name, clean if weather == "clean" else synthesize(clean, weather, rng))
            _write(root / "gt" / name, clean)
            lines.append(f"input/{name}")
            bar.update()
    (root / "allweather.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


def _build_test(root: Path, photos: list[np.ndarray], per_weather: int, seed: int, bar: tqdm) -> dict[str, int]:
    counts = {}
    for weather in WEATHERS:
        key = f"demo-{weather}"
        for i in range(per_weather):
            rng = _rng(seed, "test", weather, i)
            h, w = TEST_SIZES[i % len(TEST_SIZES)]
            if weather == "rainfog":
                # Test1: 3 rain/fog variants per scene share one gt; scenes numbered from 0301 as in Test1.
                scene = 301 + i // 3
                h, w = TEST_SIZES[-1 - (i // 3) % len(TEST_SIZES)]  # per scene: its variants share the gt
                clean = _crop(photos[(i // 3) % len(photos)], h, w, _rng(seed, "test", weather, 1000 + i // 3))
                _write(root / key / "input" / f"im_{scene:04d}_s{80 + 10 * (i % 3)}_a{4 + i % 3:02d}.png",
                       synthesize(clean, weather, rng))
                _write(root / key / "gt" / f"im_{scene:04d}.png", clean)
            else:
                clean = _crop(photos[i % len(photos)], h, w, rng)
                degraded = synthesize(clean, weather, rng)
                if weather == "raindrop":
                    _write(root / key / "data" / f"{i}_rain.png", degraded)
                    _write(root / key / "gt" / f"{i}_clean.png", clean)
                else:
                    inp_dir = "synthetic" if weather == "snow" else "input"
                    _write(root / key / inp_dir / f"{weather}_{i:04d}.png", degraded)
                    _write(root / key / "gt" / f"{weather}_{i:04d}.png", clean)
            bar.update()
        counts[key] = per_weather
    return counts


def build_demo(root: Path, seed: int = 0, train_per_weather: int | None = None, test_per_weather: int = 12,
               clean_share: float = CLEAN_SHARE) -> Path:
    """Build the demo set at `root` (replacing an older demo build there); returns `root`.

    `train_per_weather` None: default_train_per_weather (more scenes deserve more crops); plus
    clean -> clean pairs, `clean_share` of all training pairs.

    Built in a temporary sibling folder and renamed into place, so a killed build never leaves a
    half set that looks complete, and concurrent builders (e.g. several DDP ranks) do not clash.
    """
    root = Path(root)
    old = read_manifest(root)
    if root.exists() and any(root.iterdir()) and old is None:
        raise FileExistsError(f"{root} exists and is not a demo set (no manifest.json); remove it or build "
                              "elsewhere (--out DIR, or $DWGN_DEMO)")
    if not 0.0 <= clean_share < 1.0:
        raise ValueError(f"clean_share must be in [0, 1), got {clean_share}")
    start = time.perf_counter()
    train_paths = train_photo_paths()
    if train_per_weather is None:
        train_per_weather = default_train_per_weather(len(train_paths))
    n_clean = clean_pairs(train_per_weather, clean_share)
    train_photos = [read_image(p) for p in train_paths]
    test_photos = [read_image(p) for p in packaged_photos("test")]
    tmp = root.parent / f".{root.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    total = len(WEATHERS) * (train_per_weather + test_per_weather) + n_clean
    with tqdm(total=total, desc="demo set", unit="img", leave=False) as bar:
        n_train = _build_train(tmp / "train", train_photos, train_per_weather, n_clean, seed, bar)
        counts = _build_test(tmp / "test", test_photos, test_per_weather, seed, bar)
    manifest = {
        "synthetic": True,
        "note": "SYNTHETIC data: packaged sample photos with simulated weather (dwgn.data.weather); "
                "not a benchmark, scores on it are not comparable with published results",
        "version": DEMO_VERSION,
        "seed": seed,
        "photos": {"train": [p.name for p in train_paths],
                   "test": [p.name for p in packaged_photos("test")]},
        "train_pairs": n_train,
        "train_per_weather": train_per_weather,
        "clean_pairs": n_clean,
        "clean_share": clean_share,
        "test_sets": counts,
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if old is not None:  # an older demo version: ours to replace
        shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, root)
    except OSError:
        if read_manifest(root) is None:  # not a concurrent builder winning the race: a real failure
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def make_figure(out: Path, seed: int = 0, size: int = 256) -> Path:
    """figures/weather_examples.png: each test photo (rows) clean, then under each synthetic weather."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photos = [read_image(p) for p in packaged_photos("test")]
    fig, axes = plt.subplots(len(photos), 1 + len(WEATHERS), figsize=(2.0 * (1 + len(WEATHERS)), 2.05 * len(photos)))
    for r, photo in enumerate(photos):
        clean = _crop(photo, size, size, _rng(seed, "test", "snow", 5000 + r))
        row = [("clean", clean)] + [(w, synthesize(clean, w, _rng(seed, "test", w, 5000 + r))) for w in WEATHERS]
        for c, (title, img) in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
    fig.suptitle("Synthetic weather (dwgn.data.weather) on packaged test photos", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out, dpi=90)
