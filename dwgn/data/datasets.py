"""Data for every stage: image reading, the named benchmark sets, the demo set, and the datasets.

All images come out as float32 (3, H, W) tensors in [0, 1] (RGB). A pair is (input_path, gt_path).
Randomness: each dataset's __getitem__ takes an int index i (seed = i) or a tuple (index, seed);
every random choice for that sample (crop, flip/rotation, weather) comes from
np.random.default_rng(seed), so a sample is reproduced exactly from (index, seed).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from dwgn.errors import DataError
from dwgn.data import layouts
from dwgn.data.demo import DEMO_VERSION, build_demo, read_manifest, train_photo_paths
from dwgn.data.imagenet import read_image_list, scan_images
from dwgn.data.images import image_size, read_image
from dwgn.data.paths import DATA_ROOT, DEMO_ROOT
from dwgn.data.photos import packaged_photos
from dwgn.data.transforms import (apply_tone, as_unit_float, draw_tone, random_crop, random_dihedral, random_tone,
                                  to_tensor)
from dwgn.data.weather import WEATHERS, synthesize, weather_cumulative

TEST_SET_NAMES = ("snow100k-s", "snow100k-l", "outdoor-rain", "raindrop-a", "raindrop-b", "demo")
DEMO_TEST_SETS = ("demo-snow", "demo-rainfog", "demo-raindrop", "demo-rain", "demo-haze")


# ---------------------------------------------------------------------------------------------
# Finding the data
# ---------------------------------------------------------------------------------------------
def ensure_demo(root: Path | None = None) -> Path:
    """The embedded demo set's root, built first if missing or if its training photos changed (e.g.
    after dataset/fetch_photos.py); one line says so (~30 s from the packaged photos, ~2 min with
    the fetched ones, once)."""
    root = Path(root) if root is not None else DEMO_ROOT
    manifest = read_manifest(root)
    if (manifest is not None and manifest.get("version") == DEMO_VERSION
            and manifest.get("photos", {}).get("train") == [p.name for p in train_photo_paths()]):
        return root
    print(f"building the embedded SYNTHETIC demo set in {root} (from packaged and any fetched photos, once)")
    return build_demo(root)


def _report(scan: layouts.PairScan) -> None:
    if scan.skipped():
        print(scan.summary())


def training_pairs(data: str | Path | None) -> list[tuple[Path, Path]]:
    """Training pairs from an Allweather root or list file, the authors' mix, any paired folder,
    or None (the demo training set). Outdoor-Rain test scenes 0301-0350 are always removed."""
    if data is None:
        root = ensure_demo() / "train"
        scans = [layouts.scan_set(root)]
        print(f"no --data given: training on the embedded SYNTHETIC demo set ({len(scans[0].pairs)} pairs, {root})")
    else:
        data = Path(data)
        if not data.exists():
            raise FileNotFoundError(f"training data {data} does not exist; give an Allweather folder or list file, "
                                    "the authors' mix folder, or a folder with input/ and gt/ (dataset/README.md)")
        if data.is_dir() and layouts.is_authors_mix(data):
            scans = [layouts.scan_set(p) for p in layouts.mix_subsets(data, "train").values()]
        elif data.is_dir() and not layouts.find_sets(data, max_depth=0) and layouts.find_sets(data / "train", 0):
            scans = [layouts.scan_set(data / "train")]
        else:
            scans = [layouts.scan_set(data)]
    pairs: list[tuple[Path, Path]] = []
    for scan in scans:
        layouts.drop_test_scenes(scan)
        _report(scan)
        pairs += scan.pairs
    if not pairs:
        raise DataError(f"no training pairs found in {data}: " + "; ".join(s.summary() for s in scans))
    check_images([path for pair in pairs for path in pair], f"training images of {data or 'the demo set'}")
    return pairs


def header_readable(path: Path) -> bool:
    """Can Pillow read the file's header (format and size)? Nothing is decoded."""
    try:
        image_size(path)
        return True
    except (DataError, OSError, Image.DecompressionBombError):
        return False


def check_images(paths: Iterable[Path], what: str) -> None:
    """Training data is checked before step 1: images whose header cannot be read (not an image, empty, cut
    short) are refused in one DataError naming them, instead of stopping the run when a batch reaches them.
    Headers only (about 0.2 ms a file); pixels that fail to decode later still stop the run, naming the file."""
    paths = list(paths)
    with ThreadPoolExecutor(8) as pool:  # threads: waiting on the disk, not on Python
        readable = list(tqdm(pool.map(header_readable, paths, chunksize=256), total=len(paths),
                             desc="checking image headers", unit="img", leave=False,
                             disable=True if len(paths) < 20_000 else None))
    bad = [path for path, ok in zip(paths, readable) if not ok]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if bad[5:] else "")
        raise DataError(f"{len(bad)} of the {len(paths)} {what} cannot be read (corrupt, truncated or not an "
                        f"image): {shown}; replace or remove them, then rerun")


def test_scans(names: list[str] | None, data_root: Path | None = None) -> dict[str, layouts.PairScan]:
    """Test sets by key, each a PairScan (its pairs, and what was left out while pairing). Names: snow100k-s,
    snow100k-l, outdoor-rain, raindrop-a, raindrop-b (under `data_root`, default $DWGN_DATA or
    <repo>/datasets), demo (the five embedded sets), or folders (key = folder name; an authors' mix
    folder gives one key per subset). None means demo."""
    data_root = Path(data_root) if data_root is not None else DATA_ROOT
    out: dict[str, layouts.PairScan] = {}
    for name in names or ["demo"]:
        scans: dict[str, layouts.PairScan] = {}
        if name == "demo":
            root = ensure_demo() / "test"
            scans = {key: layouts.scan_set(root / key) for key in DEMO_TEST_SETS}
        elif name in layouts.NAMED_SET_PLACES:
            scans = {name: layouts.scan_set(layouts.named_set_dir(name, data_root))}
        elif Path(name).is_dir() and layouts.is_authors_mix(Path(name)):
            mix = Path(name)
            scans = {f"{mix.name}-{sub}": layouts.scan_set(p) for sub, p in layouts.mix_subsets(mix, "test").items()}
        elif Path(name).exists():
            path = Path(name)
            scans = {path.stem if path.is_file() else path.name: layouts.scan_set(path)}
        else:
            raise FileNotFoundError(f"unknown test set {name!r}: not one of {', '.join(TEST_SET_NAMES)} and not a folder")
        for key, scan in scans.items():
            _report(scan)
            if not scan.pairs:
                raise DataError(f"test set {key!r} has no pairs: {scan.summary()}")
            if key in out:
                raise DataError(f"two test sets share the key {key!r} ({name}); rename one folder")
            out[key] = scan
    return out


def test_sets(names: list[str] | None, data_root: Path | None = None) -> dict[str, list[tuple[Path, Path]]]:
    """Test pairs by key (see test_scans)."""
    return {key: scan.pairs for key, scan in test_scans(names, data_root).items()}


test_scans.__test__ = test_sets.__test__ = False  # importing them must not make pytest collect them as tests


def pretraining_images(data: str | Path | None) -> list[Path]:
    """Clean images for pre-training: an ImageNet list file (dataset/prepare_imagenet.py) or folder,
    or None (the packaged training photos, with one line saying so)."""

    if data is None:
        paths = packaged_photos("train")
        print(f"no --data given: pre-training on the {len(paths)} packaged photos (scikit-image/matplotlib "
              "sample data), not ImageNet; see dataset/README.md")
        return paths
    data = Path(data)
    if data.is_file() or data.is_dir():
        paths = read_image_list(data) if data.is_file() else scan_images(data)
        check_images(paths, f"pre-training images of {data}")
        return paths
    raise FileNotFoundError(f"pre-training data {data} does not exist; give an ImageNet train folder or the "
                            "list written by `python dataset/prepare_imagenet.py --root DIR`")


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------
def _index_and_rng(index: int | tuple[int, ...]) -> tuple[int, np.random.Generator]:
    """int i -> (i, rng(i)); (i, seed) or the sampler's (i, seed, step_seed) -> (i, rng(seed))."""
    if isinstance(index, tuple):
        i, seed = index[:2]
    else:
        i, seed = index, index
    return int(i), np.random.default_rng(int(seed))


class _ImageCache:
    """Keeps decoded images when there are few (the packaged photos): decoding dominates otherwise."""

    def __init__(self, paths: list[Path], limit: int = 64):
        self.enabled = len(paths) <= limit
        self.images: dict[Path, np.ndarray] = {}

    def get(self, path: Path) -> np.ndarray:
        if not self.enabled:
            return read_image(path)
        if path not in self.images:
            self.images[path] = read_image(path)
        return self.images[path]


class PairedDataset(Dataset):
    """(input, target) float tensors (3, crop, crop), identical random crop and flip/rotation;
    crop=None gives whole images (then a pair's sizes must match, too)."""

    def __init__(self, pairs: list[tuple[Path, Path]], crop: int | None = 128, augment: bool = True):
        if not pairs:
            raise ValueError("PairedDataset needs at least one pair")
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.crop = crop
        self.augment = augment

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, rng = _index_and_rng(index)
        inp_path, gt_path = self.pairs[i]
        inp, gt = read_image(inp_path), read_image(gt_path)
        if inp.shape != gt.shape:
            raise DataError(f"input {inp_path} is {inp.shape[1]}x{inp.shape[0]} but its gt {gt_path} is "
                            f"{gt.shape[1]}x{gt.shape[0]}; fix or remove the pair "
                            "(`python dataset/prepare.py --check DIR` lists all such pairs)")
        images = [inp, gt]
        if self.crop is not None:
            images = random_crop(images, self.crop, rng)
        if self.augment:
            images = random_dihedral(images, rng)
        return to_tensor(images[0]), to_tensor(images[1])


class CleanImageDataset(Dataset):
    """Random crop x crop clean images (reflect-padded when smaller), (3, crop, crop) in [0, 1].

    `length` (default: number of paths) lets a few photos serve many samples: index i uses
    paths[i % len(paths)], with a fresh crop per seed.
    """

    def __init__(self, paths: list[Path], crop: int = 128, length: int | None = None):
        if not paths:
            raise ValueError("CleanImageDataset needs at least one image path")
        self.paths = [Path(p) for p in paths]
        self.crop = crop
        self.length = length if length is not None else len(self.paths)
        self._cache = _ImageCache(self.paths)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int | tuple[int, int]) -> torch.Tensor:
        i, rng = _index_and_rng(index)
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        img = self._cache.get(self.paths[i % len(self.paths)])
        return to_tensor(random_crop([img], self.crop, rng)[0])


class SyntheticWeatherDataset(Dataset):
    """(degraded, clean) pairs made on the fly: a random crop (and flip/rotation) of a clean image,
    degraded by one weather chosen from `weathers` (dwgn.data.weather), uniformly or in proportion to
    `weights` (one non-negative number per weather, not all zero); with probability `clean_share` the pair
    is clean -> clean instead (the model learns to leave clean photos alone). With probability `tone_share`
    the crop first gets a random global tone (transforms.random_tone: paler, flatter, darker or tinted), for
    both kinds of pair: scenes the few training photos lack, seen clean and under weather. With probability
    `pair_tone_share` a weather pair gets one random tone after the weather, the same affine map per channel on
    both sides (m: the clean crop's mean): the weather's own light is toned with the scene, so haze and fog
    appear with darker, brighter and tinted air than the synthesiser draws (I = J t + A (1 - t) maps to
    f(I) = f(J) t + f(A) (1 - t)), and streaks and flakes with dimmer or tinted light. With `weather_side`
    larger than `crop`, the weather is made on a random `weather_side` square and the training crop is then cut
    from it (as the real benchmarks crop photos degraded at full size): drops, flakes and streaks keep the sizes
    and densities they have on a photo of that side instead of shrinking with the crop.

    With `clean_crop` other than `crop`, clean -> clean pairs are `clean_crop` squares (e.g. as large as the
    photos the model must leave alone: the image-wide pools of HDFN see a 512 px photo differently from a
    256 px crop, and a model trained on crops alone never sees the former). A batch stacks pairs of one size, so the choice clean or
    weather is then made once per training step, from the step seed of the sampler's `(index, sample seed,
    step seed)` (dwgn.training.sampler; a plain int index or `(index, seed)` draws it from the sample's
    seed): `clean_share` is the share of steps whose whole batch is clean.

    Every sample is fresh (its crop, weather and weather parameters come from the sample's seed), so a
    few dozen photos give as many distinct pairs as training asks for (`train.py --synth.online`)."""

    def __init__(self, paths: list[Path], crop: int = 128, weathers: tuple[str, ...] = WEATHERS,
                 length: int | None = None, clean_share: float = 0.0, weights: tuple[float, ...] | None = None,
                 tone_share: float = 0.0, weather_side: int | None = None, clean_crop: int | None = None,
                 pair_tone_share: float = 0.0):
        unknown = [w for w in weathers if w not in WEATHERS]
        if unknown or not weathers:
            raise ValueError(f"unknown weathers {unknown}; choose from {', '.join(WEATHERS)}")
        if not 0.0 <= clean_share < 1.0:
            raise ValueError(f"clean_share must be in [0, 1), got {clean_share}")
        if not 0.0 <= tone_share <= 1.0:
            raise ValueError(f"tone_share must be in [0, 1], got {tone_share}")
        if not 0.0 <= pair_tone_share <= 1.0:
            raise ValueError(f"pair_tone_share must be in [0, 1], got {pair_tone_share}")
        if weather_side is not None and weather_side < crop:
            raise ValueError(f"weather_side must be at least the crop ({crop}), got {weather_side}")
        if clean_crop is not None and clean_crop <= 0:
            raise ValueError(f"clean_crop must be a positive side in px (or None for the crop), got {clean_crop}")
        self.clean = CleanImageDataset(paths, crop=crop, length=length)
        self.clean_crop = clean_crop if clean_crop and clean_crop != crop else None  # None: the crop
        self.weather_side = weather_side if weather_side and weather_side > crop else None  # None: the crop
        self.weathers = tuple(weathers)
        self.clean_share = clean_share
        self.tone_share = tone_share
        self.pair_tone_share = pair_tone_share
        cumulative = None if weights is None else weather_cumulative(weights, self.weathers)  # validates them
        # equal weights are the uniform draw, with the draws of before weights existed
        self.cumulative = None if weights is None or len(set(weights)) == 1 else cumulative

    def __len__(self) -> int:
        return len(self.clean)

    def __getitem__(self, index: int | tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        i, rng = _index_and_rng(index)
        if not 0 <= i < len(self.clean):
            raise IndexError(f"index {i} out of range for {len(self.clean)} samples")
        img = self.clean._cache.get(self.clean.paths[i % len(self.clean.paths)])
        if self.clean_crop is None:
            return self._crop_pair(img, rng, may_be_clean=True)
        # clean or weather for the whole step (pairs of one size per batch), from the step seed when there is one
        step_rng = np.random.default_rng(index[2]) if isinstance(index, tuple) and len(index) > 2 else rng
        if self.clean_share > 0 and step_rng.random() < self.clean_share:
            crop = self._toned(random_dihedral(random_crop([img], self.clean_crop, rng), rng)[0], rng)
            return to_tensor(crop), to_tensor(crop)
        return self._crop_pair(img, rng, may_be_clean=False)

    def _toned(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The crop, given a random tone with probability tone_share (no draw at 0: older samples unchanged)."""
        return random_tone(crop, rng) if self.tone_share > 0 and rng.random() < self.tone_share else crop

    def _crop_pair(self, img: np.ndarray, rng: np.random.Generator,
                   may_be_clean: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A pair at the training crop: a weather pair, or with probability clean_share (when `may_be_clean`) a
        clean one."""
        side = self.weather_side or self.clean.crop
        crop = self._toned(random_dihedral(random_crop([img], side, rng), rng)[0], rng)
        if may_be_clean and self.clean_share > 0 and rng.random() < self.clean_share:  # none at 0: as before
            if self.weather_side is not None:
                crop = random_crop([crop], self.clean.crop, rng)[0]
            return to_tensor(crop), to_tensor(crop)
        # Weather is added after the rotation so rain still falls downwards.
        if self.cumulative is None:
            weather = self.weathers[int(rng.integers(0, len(self.weathers)))]
        else:
            weather = self.weathers[min(int(np.searchsorted(self.cumulative, rng.random(), side="right")),
                                        len(self.weathers) - 1)]
        degraded = synthesize(crop, weather, rng)
        if self.weather_side is not None:  # the training crop, cut from the degraded square and its clean one
            degraded, crop = random_crop([degraded, crop], self.clean.crop, rng)
        if self.pair_tone_share > 0 and rng.random() < self.pair_tone_share:  # no draw at 0: older samples unchanged
            tone, clean = draw_tone(rng), as_unit_float(crop)
            m = float(clean.mean())
            degraded, crop = apply_tone(degraded, *tone, mean=m), apply_tone(clean, *tone, mean=m)
        return to_tensor(degraded), to_tensor(crop)
