"""The web page's work without the web page: read an upload, restore it, time it (tested without Gradio).

Every problem with an upload is an `UploadError` whose message the page shows; the server never dies of a
bad file. What is accepted: any image Pillow reads, up to `max_pixels`. 16-bit images are scaled to 8 bits,
grayscale ones restored as three equal channels and returned in gray, EXIF orientation applied, and transparent
ones restored in colour with their alpha channel passed through unchanged (as `test.py --input` and
`dwgn.restore` do) -- each conversion is reported in `Restoration.notes`.
"""
from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from dwgn.data.images import read_photo
from dwgn.evaluation.restore import AUTO_TILE_PIXELS, DEFAULT_TILE, auto_tile, restore

# mode shown on the page -> `restore`'s tile argument (None: tiles of DEFAULT_TILE above AUTO_TILE_PIXELS)
MODES: dict[str, int | None] = {"auto": None, "whole image": 0, "tiled": DEFAULT_TILE}
DEFAULT_MAX_MEGAPIXELS = 16.0
# "whole image" holds every feature map of the photo at once (about 2.5 GB per megapixel for `tiny` on the
# CPU, README "Inference speed and memory"); above this it is refused in favour of tiles
WHOLE_IMAGE_MAX_PIXELS = 4 * AUTO_TILE_PIXELS


class UploadError(ValueError):
    """An upload the page cannot restore; the message says why and what to do."""


@dataclass
class Restoration:
    input: np.ndarray         # HxWx3 RGB, HxWx4 RGBA or HxW gray uint8, what the network saw (alpha aside)
    output: np.ndarray        # the same shape, restored
    png: Path                 # the output as a PNG file, for download
    seconds: float            # the restore alone (not reading or writing files)
    mode: str                 # "whole image" or "tiled (512 px tiles)"
    notes: list[str] = field(default_factory=list)


def _bit_depth_16(path: Path, im: Image.Image) -> bool:
    """16 bits per channel? Pillow opens 16-bit gray as I;16 but 16-bit RGB PNGs as 8-bit RGB, so the PNG
    header's bit-depth byte (offset 24) is read for those."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return True
    if im.format == "PNG":
        with open(path, "rb") as fh:
            header = fh.read(25)
        return len(header) == 25 and header[24] == 16
    return False


def read_upload(path: str | Path, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """(HxWx3 RGB, HxWx4 RGBA or HxW gray uint8, notes on conversions). Raises UploadError for anything unusable."""
    path = Path(path)
    name = path.name
    try:
        with Image.open(path) as im:  # reads the header only: the size is checked before decoding
            width, height = im.width, im.height
            sixteen = _bit_depth_16(path, im)
            orientation = im.getexif().get(0x0112, 1)  # EXIF orientation: phones store photos sideways
    except Image.DecompressionBombError:
        raise UploadError(f"{name} is far too large to decode safely; the page takes up to "
                          f"{max_pixels / 1e6:.0f} megapixels") from None
    except (OSError, SyntaxError, ValueError):
        raise UploadError(f"{name} is not an image this page can read (PNG, JPEG, WebP, TIFF, BMP ...)") from None
    if width * height > max_pixels:
        raise UploadError(f"{name} is {width}x{height} ({width * height / 1e6:.1f} megapixels), above this page's "
                          f"limit of {max_pixels / 1e6:.0f}: shrink it, or restart the page with a larger "
                          f"--max-megapixels, or restore it with `python test.py --input FOLDER`")
    try:
        photo = read_photo(path)  # upright, as test.py --input and every photo viewer show it; alpha kept
    except ValueError as err:
        raise UploadError(str(err).replace(str(path), name).split(" (corrupt")[0]) from None
    if photo.dtype == np.uint16:
        photo = np.round(photo / 257.0).astype(np.uint8)
    notes = []
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        notes.append("EXIF orientation applied: restored upright")
    if sixteen:
        notes.append("16-bit image: scaled to 8 bits per channel (the network works on 8-bit photos)")
    if photo.ndim == 3 and photo.shape[2] == 4:
        notes.append("alpha channel (transparency): the colours are restored, the alpha is kept unchanged")
    if photo.ndim == 2:
        notes.append("grayscale image: restored as three equal channels, returned in gray")
    return photo, notes  # restore() returns gray for gray (H,W) and passes RGBA's alpha through


class Restorer:
    """One model behind the page: `restorer(path, mode)` -> Restoration. One restore at a time (the
    network's global pools hold per-call state while tiling)."""

    def __init__(self, model: nn.Module, checkpoint: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                 out_dir: str | Path | None = None) -> None:
        self.model = model.eval()
        self.checkpoint = checkpoint
        self.max_pixels = int(max_megapixels * 1e6)
        self._tmp = None if out_dir is not None else tempfile.TemporaryDirectory(prefix="dwgn-app-")
        self.out_dir = Path(out_dir if out_dir is not None else self._tmp.name)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __call__(self, path: str | Path | None, mode: str = "auto") -> Restoration:
        if path is None:
            raise UploadError("no photo: upload one first")
        if mode not in MODES:
            raise UploadError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
        image, notes = read_upload(path, self.max_pixels)
        h, w = image.shape[:2]
        tile = MODES[mode]
        if tile is None:  # auto: what restore() does by default, made explicit to report it
            tile = auto_tile(h, w)
        if tile == 0 and h * w > WHOLE_IMAGE_MAX_PIXELS:
            raise UploadError(f"{w}x{h} is too large to restore as a whole image (above "
                              f"{WHOLE_IMAGE_MAX_PIXELS / 2 ** 20:.0f} megapixels): pick 'tiled' or 'auto'")
        with self._lock:
            start = time.perf_counter()
            output = restore(self.model, image, tile=tile)
            seconds = time.perf_counter() - start
        out = Path(tempfile.mkdtemp(dir=self.out_dir)) / f"{Path(path).stem}-restored.png"
        Image.fromarray(output).save(out)
        tiled = tile and max(h, w) > tile  # a photo within one tile is restored whole
        how = f"tiled, {tile} px tiles" if tiled else "whole image"
        return Restoration(image, output, out, seconds, how, notes)


__all__ = ["DEFAULT_MAX_MEGAPIXELS", "MODES", "Restoration", "Restorer", "UploadError", "WHOLE_IMAGE_MAX_PIXELS",
           "read_upload"]
