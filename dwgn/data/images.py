"""Reading images: (H, W, 3) uint8 RGB from any common file, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from dwgn.errors import DataError


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Gray, palette, CMYK and 16-bit are converted; RGBA is accepted only if
    fully opaque (what lies under transparent pixels is undefined). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file raises here, not later
            return _to_rgb8(im, path)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e} (corrupt or truncated: re-download it, or remove "
                         "it and rerun `python dataset/prepare.py --check`)") from e


def _to_rgb8(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit gray (PIL reads 16-bit RGB as 8-bit already): scale the 0..65535 range to 0..255.
        arr = np.asarray(im).astype(np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise DataError(f"image {path}: {mode} values outside 0..65535; save it as 8- or 16-bit PNG")
        gray = np.round(arr / 257.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise DataError(f"image {path} is floating-point ({mode}); save it as an 8- or 16-bit PNG")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() < 255:
            raise DataError(f"image {path} has transparent pixels (alpha min {alpha.min()}); the colour under "
                             "them is undefined: flatten it onto a background and save it as RGB")
        im = im.convert("RGB")
    elif mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV: well-defined conversions
    return np.array(im, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header only (no decoding)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot read image header of {path}: {e}") from e
