"""Indexing an ImageNet train folder for pre-training (dataset/prepare_imagenet.py).

1.28 M files: the index uses os.scandir only (no image is opened) and is restartable: each class
folder's file list is written atomically to `<out>.parts/<class>.txt`, so a killed run skips the
classes already done; the final list is assembled at the end and the parts removed.

List format: a header line `# root: <absolute ImageNet train folder>`, then one path per line,
relative to that root (`n01440764/n01440764_10026.JPEG`). Absolute lines are accepted too.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tqdm import tqdm

from dwgn.errors import ArgumentParser, DataError
from dwgn.data.layouts import IMAGE_EXTS
from dwgn.data.paths import DATA_ROOT
from dwgn.io import atomic_path, write_text_atomic

_HEADER = "# root: "


def _images_in(folder: Path) -> list[str]:
    """Image file names directly in `folder` (recursing into sub-folders), sorted, relative to it."""
    out = []
    stack = [folder]
    while stack:
        cur = stack.pop()
        with os.scandir(cur) as it:
            for entry in it:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.name.lower().endswith(IMAGE_EXTS):
                    out.append(Path(entry.path).relative_to(folder).as_posix())
    return sorted(out)


def index_imagenet(root: Path, out: Path, progress: bool = True) -> tuple[Path, int]:
    """Write the list of every image under `root` (class folders) to `out`; returns (out, count)."""
    root = Path(root).resolve()
    out = Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet folder {root} does not exist; give the train folder holding "
                                "the 1000 class folders (n01440764/ ...)")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    loose = _loose_images(root)
    if not classes and not loose:
        raise FileNotFoundError(f"{root} holds neither class folders nor images")
    parts = out.parent / (out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    done = {p.stem for p in parts.glob("*.txt")}
    if done:
        print(f"resuming: {len(done)} of {len(classes)} class folders already indexed in {parts}")
    for name in tqdm(classes, desc="indexing", unit="class", disable=not progress):
        if name in done:
            continue
        names = [f"{name}/{n}" for n in _images_in(root / name)]
        # atomic: a class is either fully indexed or not at all
        write_text_atomic(parts / f"{name}.txt", "".join(n + "\n" for n in names))
    count = len(loose)
    with atomic_path(out) as tmp, open(tmp, "w") as f:
        f.write(f"{_HEADER}{root}\n")
        f.writelines(n + "\n" for n in loose)
        for name in classes:
            text = (parts / f"{name}.txt").read_text()
            count += text.count("\n")
            f.write(text)
    shutil.rmtree(parts)
    return out, count


def _loose_images(root: Path) -> list[str]:
    with os.scandir(root) as it:
        return sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTS))


def read_image_list(path: Path) -> list[Path]:
    """The image paths of a list file (header root + relative lines, or absolute lines)."""
    path = Path(path)
    lines = path.read_text().splitlines()
    root = path.parent
    if lines and lines[0].startswith(_HEADER):
        root = Path(lines[0][len(_HEADER):].strip())
        lines = lines[1:]
    paths = [root / ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not paths:
        raise DataError(f"image list {path} names no images")
    if not paths[0].is_file():
        raise FileNotFoundError(f"image list {path}: first entry {paths[0]} does not exist (was the data moved? "
                                "rerun `python dataset/prepare_imagenet.py --root DIR`)")
    return paths


def scan_images(root: Path) -> list[Path]:
    """Every image below `root` (an ImageNet-like folder), without writing a list."""
    root = Path(root)
    names = _images_in(root)
    if not names:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) under {root}")
    if len(names) > 100_000:
        print(f"indexed {len(names)} images under {root}; index once with "
              "`python dataset/prepare_imagenet.py --root DIR` and pass the list to start faster")
    return [root / n for n in names]


def main(argv: list[str] | None = None) -> int:
    """`python dataset/prepare_imagenet.py --root DIR [--out LIST]`."""

    parser = ArgumentParser(prog="python dataset/prepare_imagenet.py", description="Index an ImageNet train folder "
                            "for pre-training (no image decoding; restartable).")
    parser.add_argument("--root", type=Path, required=True, help="ImageNet train folder (class sub-folders)")
    parser.add_argument("--out", type=Path, default=DATA_ROOT / "imagenet_train.txt",
                        help="list file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    out, count = index_imagenet(args.root, args.out)
    print(f"wrote {out}: {count} images; pre-train with `python pre-training.py --data {out}`")
    return 0
