"""Reading images: (H, W, 3) uint8 RGB from any common file (data sets), or a user's photo as it is stored
(gray, 16-bit, alpha and EXIF orientation kept: `read_photo` / `save_photo`); errors name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from dwgn.errors import DataError
from dwgn.io import atomic_path

_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I")


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
    if mode in _SIXTEEN_BIT_GRAY:
        # 16-bit gray (PIL reads 16-bit RGB as 8-bit already): scale the 0..65535 range to 0..255.
        gray = np.round(_gray16(im, path) / 257.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise DataError(f"image {path} is floating-point; save it as an 8- or 16-bit PNG")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() < 255:
            raise DataError(f"image {path} has transparent pixels (alpha min {alpha.min()}); the colour under "
                            "them is undefined: flatten it onto a background and save it as RGB")
        im = im.convert("RGB")
    elif mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV: well-defined conversions
    return np.array(im, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)


def _gray16(im: Image.Image, path: Path) -> np.ndarray:
    """A 16-bit gray image (Pillow mode I;16* or I) as (H, W) uint16; values outside 0..65535 are refused."""
    arr = np.asarray(im)
    if arr.min() < 0 or arr.max() > 65535:
        raise DataError(f"image {path}: {im.mode} values outside 0..65535; save it as an 8- or 16-bit PNG")
    return arr.astype(np.uint16)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header only (no decoding)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot read image header of {path}: {e}") from e


# ---------------------------------------------------------------------------------------- user photos
def read_photo(path: str | Path) -> np.ndarray:
    """A user's photo as stored, upright (EXIF orientation applied): HxW gray, HxWx3 RGB or HxWx4 RGBA
    (alpha kept); uint8, or uint16 for 16-bit files (colour 16-bit files are decoded with OpenCV, since
    Pillow reads them as 8-bit). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if _is_16bit_colour(path, im):
                return orient(_read_16bit_colour(path), im.getexif().get(0x0112, 1))
            return _photo_array(ImageOps.exif_transpose(im), path)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e} (corrupt, truncated or not an image)") from e


def _photo_array(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in _SIXTEEN_BIT_GRAY:
        return _gray16(im, path)  # (H,W)
    if im.mode == "F":
        raise DataError(f"image {path} is floating-point; save it as an 8- or 16-bit PNG")
    if im.mode in ("L", "1"):
        return np.array(im.convert("L"), dtype=np.uint8)  # (H,W)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        return np.array(im.convert("RGBA"), dtype=np.uint8)  # (H,W,4)
    return np.array(im.convert("RGB"), dtype=np.uint8)  # (H,W,3)


def _is_16bit_colour(path: Path, im: Image.Image) -> bool:
    """A colour PNG/TIFF with 16 bits per sample (Pillow would hand it over as 8-bit)."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    if im.format == "PNG":
        with open(path, "rb") as fh:
            header = fh.read(25)
        return len(header) == 25 and header[24] == 16  # IHDR bit depth
    bits = getattr(im, "tag_v2", {}).get(258) if im.format == "TIFF" else None
    return bits is not None and max(bits if isinstance(bits, tuple) else (bits,)) == 16


def _read_16bit_colour(path: Path) -> np.ndarray:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # (H,W,3|4) BGR(A) uint16
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        raise DataError(f"cannot read the 16-bit image {path}; save it as an 8-bit PNG")
    return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H,W,...) array, as Pillow's exif_transpose does."""
    transforms = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
                  5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
                  7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(transforms[orientation](arr)) if orientation in transforms else arr


def save_photo(path: Path, image: np.ndarray) -> None:
    """Write a PNG atomically in the image's own layout: gray, RGB or RGBA; 8- or 16-bit."""
    with atomic_path(path) as tmp:
        if image.dtype == np.uint16 and image.ndim == 3:
            import cv2

            code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
            if not cv2.imwrite(str(tmp), cv2.cvtColor(image, code)):
                raise OSError(f"could not write {path}")
        else:
            Image.fromarray(image).save(tmp, format="PNG")
