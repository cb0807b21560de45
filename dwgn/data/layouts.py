"""The real benchmark layouts (docs/DESIGN.md §4): finding (input, gt) pairs exactly as each set names them.

Every function here returns a `PairScan` that keeps what it could not use (unpaired files, files a
list names but that are missing, Outdoor-Rain test scenes removed from training, non-images), so
callers report every skip instead of dropping files silently.

Naming rules, tried in order for each input file (first existing gt wins):
1. the same stem in the gt folder (Allweather, Snow100K, plain paired folders, the authors' mix);
2. RainDrop: `N_rain` -> `N_clean`;
3. Outdoor-Rain Test1: `im_XXXX_sYY_aZZ` -> `im_XXXX`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from dwgn.errors import DataError

from dwgn.io import write_text_atomic

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
INPUT_DIRS = ("input", "data", "synthetic")
GT_DIRS = ("gt", "label")
MIX_SUBSETS = ("snow", "drop", "haze", "rain", "night")  # the authors' own mix
PAIRS_LIST = "dwgn_pairs.txt"  # written by `prepare.py --check DIR --write-lists`, read first by the loaders
EXPECTED_PAIRS = {  # docs/DESIGN.md §4
    "allweather": 18069,
    "snow100k-s": 16611,
    "snow100k-l": 16801,
    "outdoor-rain": 750,
    "raindrop-a": 58,
    "raindrop-b": 249,
}
OUTDOOR_RAIN_TEST_SCENES = range(301, 351)  # im_0301 .. im_0350: Test1, never train on them
_OUTDOOR_RAIN = re.compile(r"^im_(\d+)_s\d+_a\d+$", re.IGNORECASE)
_OUTDOOR_SCENE = re.compile(r"^im_(\d+)(?:_|$)", re.IGNORECASE)


@dataclass
class PairScan:
    """Pairs found in one set, and everything that was left out (with the reason)."""

    root: Path
    layout: str
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    unpaired_inputs: list[Path] = field(default_factory=list)
    unpaired_gts: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)       # named by a list file, absent on disk
    leaked: list[Path] = field(default_factory=list)        # Outdoor-Rain test scenes left out of training
    not_images: list[Path] = field(default_factory=list)

    def skipped(self) -> dict[str, list[Path]]:
        """Every kind of skip that happened (empty kinds left out)."""
        kinds = {"unpaired input": self.unpaired_inputs, "unpaired gt": self.unpaired_gts,
                 "missing": self.missing, "Outdoor-Rain test scene (0301-0350) removed from training": self.leaked,
                 "not an image": self.not_images}
        return {k: v for k, v in kinds.items() if v}

    def summary(self) -> str:
        """One line: pairs found and each kind of skip with its first example."""
        parts = [f"{self.root}: {len(self.pairs)} pairs ({self.layout})"]
        for kind, paths in self.skipped().items():
            parts.append(f"skipped {len(paths)} {kind} (first: {paths[0]})")
        return "; ".join(parts)


def _listdir(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """Images by stem, and the other files, using os.scandir (no decoding; fast on 100k files)."""
    images: dict[str, Path] = {}
    others: list[Path] = []
    with os.scandir(folder) as it:
        for entry in it:
            if not entry.is_file():
                continue
            path = Path(entry.path)
            if path.suffix.lower() in IMAGE_EXTS:
                if path.stem in images:  # e.g. a.png and a.jpg: pairing by stem would be ambiguous
                    raise DataError(f"two images share the name {path.stem!r} in {folder}: "
                                    f"{images[path.stem].name} and {path.name}; keep one")
                images[path.stem] = path
            else:
                others.append(path)
    return dict(sorted(images.items())), sorted(others)


def gt_stems(stem: str) -> list[tuple[str, str]]:
    """Candidate (gt stem, layout) for an input stem, in the order of the module's naming rules."""
    out = [(stem, "paired")]
    if stem.lower().endswith("_rain"):
        out.append((stem[: -len("_rain")] + "_clean", "raindrop"))
    if _OUTDOOR_RAIN.match(stem):
        out.append((stem[: stem.lower().index("_s")], "outdoor-rain"))
    return out


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first sub-folder whose name matches one of `names`, case-insensitively."""
    if not folder.is_dir():
        return None
    by_lower = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    return None


def paired_dirs(root: Path) -> tuple[Path, Path] | None:
    """(input folder, gt folder) if `root` holds `input/`|`data/`|`synthetic/` and `gt/`|`label/`."""
    inp, gt = _child(root, INPUT_DIRS), _child(root, GT_DIRS)
    return (inp, gt) if inp is not None and gt is not None else None


def scan_folders(root: Path) -> PairScan:
    """Pair the images of `root`'s input and gt folders by the naming rules."""
    dirs = paired_dirs(root)
    if dirs is None:
        raise FileNotFoundError(f"{root} holds no input folder ({'/'.join(INPUT_DIRS)}) beside a gt folder "
                                f"({'/'.join(GT_DIRS)}); see dataset/README.md for the layouts")
    inp_dir, gt_dir = dirs
    inputs, inp_other = _listdir(inp_dir)
    gts, gt_other = _listdir(gt_dir)
    scan = PairScan(root=root, layout="paired", not_images=inp_other + gt_other)
    used: set[str] = set()
    rules = {"paired": 0, "raindrop": 0, "outdoor-rain": 0}
    for stem, path in inputs.items():
        for cand, rule in gt_stems(stem):
            if cand in gts:
                scan.pairs.append((path, gts[cand]))
                used.add(cand)
                rules[rule] += 1
                break
        else:
            scan.unpaired_inputs.append(path)
    scan.unpaired_gts = [p for s, p in gts.items() if s not in used]
    if inp_dir.name.lower() == "synthetic":
        scan.layout = "snow100k"
    elif rules["raindrop"] > 0:
        scan.layout = "raindrop"
    elif rules["outdoor-rain"] > 0:
        scan.layout = "outdoor-rain"
    if not inputs and not gts:
        raise FileNotFoundError(f"{inp_dir} and {gt_dir} hold no images ({', '.join(IMAGE_EXTS)})")
    return scan


def _entry_path(base: Path, text: str, line: str) -> Path:
    """`base / text`, exactly: only a leading './' (or '/', which TransWeather writes) is dropped. An entry
    that leaves the list's folder ('..', or a symlink out) is refused."""
    rel = text.strip()
    while rel.startswith("./"):
        rel = rel[2:]
    rel = rel.lstrip("/")
    path = base / rel
    if not path.resolve().is_relative_to(base.resolve()):
        raise DataError(f"list entry {line!r} points outside the list's folder {base}; "
                        "entries must name files below it (fix or remove that line)")
    return path


def _list_entry(base: Path, line: str) -> tuple[Path, Path]:
    """(input, gt) for one list line: `in<TAB>gt`, or an input path whose `input` folder maps to `gt`.

    Paths are relative to the list's folder (see _entry_path). The folder is swapped as a path component,
    never by substring replacement (a file named e.g. 'input_03.png' would otherwise be corrupted).
    """
    if "\t" in line:
        a, b = line.split("\t", 1)
        return _entry_path(base, a, line), _entry_path(base, b, line)
    inp = _entry_path(base, line, line)
    rel = inp.relative_to(base)
    parts = list(rel.parts)
    lowered = [p.lower() for p in parts]
    for name in INPUT_DIRS:
        if name in lowered[:-1]:
            i = lowered.index(name)
            gt_dir = _child(base.joinpath(*parts[:i]), GT_DIRS)
            gt_folder = gt_dir if gt_dir is not None else base.joinpath(*parts[:i], "gt")
            for stem, _ in gt_stems(inp.stem):
                cand = gt_folder.joinpath(*parts[i + 1:-1], stem + inp.suffix)
                if cand.exists():
                    return inp, cand
            return inp, gt_folder.joinpath(*parts[i + 1:-1], inp.name)
    # A bare file name: look in input/ and gt/ beside the list.
    return base / "input" / rel, base / "gt" / rel


def scan_list(list_file: Path) -> PairScan:
    """Pairs named by a list file (Allweather's allweather.txt, or a `dwgn_pairs.txt`)."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"list file {list_file} does not exist")
    base = list_file.parent
    scan = PairScan(root=list_file, layout="allweather" if "allweather" in list_file.name.lower() else "list")
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        inp, gt = _list_entry(base, line)
        if not inp.is_file():
            scan.missing.append(inp)
        elif not gt.is_file():
            scan.missing.append(gt)
        else:
            scan.pairs.append((inp, gt))
    if not scan.pairs and not scan.missing:
        raise DataError(f"list file {list_file} names no images")
    return scan


def outdoor_rain_scene(path: Path) -> int | None:
    """The Outdoor-Rain scene number of `im_XXXX...` file names, else None."""
    m = _OUTDOOR_SCENE.match(Path(path).stem)
    return int(m.group(1)) if m else None


def drop_test_scenes(scan: PairScan) -> PairScan:
    """Remove Outdoor-Rain Test1 scenes (0301-0350) from a training scan, recording each in `leaked`."""
    keep = []
    for inp, gt in scan.pairs:
        if outdoor_rain_scene(inp) in OUTDOOR_RAIN_TEST_SCENES or outdoor_rain_scene(gt) in OUTDOOR_RAIN_TEST_SCENES:
            scan.leaked.append(inp)
        else:
            keep.append((inp, gt))
    scan.pairs = keep
    return scan


def write_pairs_list(scan: PairScan, root: Path) -> Path:
    """Write `root/dwgn_pairs.txt` (input<TAB>gt, relative to root), atomically; header counts inputs."""
    root = Path(root)
    dirs = paired_dirs(root)
    n_inputs = len(_listdir(dirs[0])[0]) if dirs else -1
    lines = [f"# dwgn pairs: {len(scan.pairs)} pairs; inputs={n_inputs}; layout={scan.layout}; "
             "written by dataset/prepare.py --check --write-lists"]
    lines += [f"{a.relative_to(root).as_posix()}\t{b.relative_to(root).as_posix()}" for a, b in scan.pairs]
    return write_text_atomic(root / PAIRS_LIST, "\n".join(lines) + "\n")


def scan_set(root: Path) -> PairScan:
    """Pairs of one set folder: its `dwgn_pairs.txt` if present and still complete, else a list file
    (allweather.txt) if present, else its input/gt folders."""
    root = Path(root)
    if root.is_file():
        return scan_list(root)
    listed = root / PAIRS_LIST
    if listed.is_file():
        scan = scan_list(listed)
        stale = _stale_reason(listed, root, scan)
        if stale is None:
            m = re.search(r"layout=([\w-]+)", listed.read_text().split("\n", 1)[0])
            scan.layout = m.group(1) if m else "list"
            scan.root = root
            return scan
        print(f"{listed} is out of date ({stale}); scanning the folders instead; "
              "rerun `python dataset/prepare.py --check DIR --write-lists` to refresh it")
    for name in ("allweather.txt",):
        if (root / name).is_file():
            return scan_list(root / name)
    return scan_folders(root)


def _stale_reason(listed: Path, root: Path, scan: PairScan) -> str | None:
    """Why a dwgn_pairs.txt no longer matches the folders (files missing or added), or None."""
    if scan.missing:
        return f"{len(scan.missing)} listed files are missing, first {scan.missing[0]}"
    m = re.search(r"inputs=(-?\d+)", listed.read_text().split("\n", 1)[0])
    dirs = paired_dirs(root)
    if m and dirs and int(m.group(1)) != len(_listdir(dirs[0])[0]):
        return f"{dirs[0]} now holds {len(_listdir(dirs[0])[0])} images, the list was made from {m.group(1)}"
    return None


def is_authors_mix(root: Path) -> bool:
    """True if `root` holds the authors' mix: some of snow/drop/haze/rain/night with {train,test}/{input,label}."""
    return bool(mix_subsets(root, "train") or mix_subsets(root, "test"))


def mix_subsets(root: Path, split: str) -> dict[str, Path]:
    """The authors' mix subsets that have `split` (train/test) with input+label, by subset name."""
    out = {}
    for name in MIX_SUBSETS:
        sub = _child(root, (name,))
        if sub is not None and (sub / split).is_dir() and paired_dirs(sub / split):
            out[name] = sub / split
    return out


# Where each named test set may live under the data root (case-insensitive; first match wins).
NAMED_SET_PLACES: dict[str, tuple[str, ...]] = {
    "snow100k-s": ("snow100k-s", "snow100k/test/snow100k-s", "snow100k/snow100k-s", "test/snow100k-s"),
    "snow100k-l": ("snow100k-l", "snow100k/test/snow100k-l", "snow100k/snow100k-l", "test/snow100k-l"),
    "outdoor-rain": ("outdoor-rain", "outdoor-rain/test1", "outdoor-rain/test", "test1", "test/test1"),
    "raindrop-a": ("raindrop-a", "raindrop/test_a", "test_a", "test/test_a"),
    "raindrop-b": ("raindrop-b", "raindrop/test_b", "test_b", "test/test_b"),
}


def _resolve(root: Path, rel: str) -> Path | None:
    """`root/rel` matched part by part case-insensitively, or None."""
    cur = root
    for part in rel.split("/"):
        nxt = _child(cur, (part,))
        if nxt is None:
            return None
        cur = nxt
    return cur


def named_set_dir(name: str, data_root: Path) -> Path:
    """The folder of a named test set under `data_root`; a clear error listing every place looked."""
    places = NAMED_SET_PLACES[name]
    for rel in places:
        found = _resolve(Path(data_root), rel)
        if found is not None and (paired_dirs(found) or (found / PAIRS_LIST).is_file()):
            return found
    looked = ", ".join(str(Path(data_root) / p) for p in places)
    raise FileNotFoundError(f"test set {name!r} not found; looked in {looked} for input|data|synthetic + gt|label "
                            "folders. Download it (dataset/README.md) or set $DWGN_DATA to the folder holding it")


def identify(root: Path) -> str | None:
    """Which named set a folder looks like (by its path), for comparing with EXPECTED_PAIRS.
    None for unknown folders and for the synthetic demo set (a manifest.json up to two levels up)."""
    if any((p / "manifest.json").is_file() for p in [Path(root), *Path(root).resolve().parents[:2]]):
        return None
    parts = [p.lower() for p in Path(root).resolve().parts[-3:]]
    joined = "/".join(parts)
    if (Path(root) / "allweather.txt").is_file() or "allweather" in joined:
        return "allweather"
    for name, key in (("snow100k-s", "snow100k-s"), ("snow100k-l", "snow100k-l"),
                      ("raindrop-a", "test_a"), ("raindrop-b", "test_b"), ("raindrop-a", "raindrop-a"),
                      ("raindrop-b", "raindrop-b"), ("outdoor-rain", "test1"), ("outdoor-rain", "outdoor-rain")):
        if key in parts:
            return name
    return None


def find_sets(root: Path, max_depth: int = 4) -> list[Path]:
    """Set folders at or below `root` (a folder with paired input/gt folders or allweather.txt)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if paired_dirs(root) or (root / "allweather.txt").is_file() or (root / PAIRS_LIST).is_file():
        return [root]
    if max_depth == 0 or not root.is_dir():
        return []
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += find_sets(sub, max_depth - 1)
    return found
