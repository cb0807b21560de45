"""Paired transforms as plain functions: the same random choice is applied to input and target.

Images are numpy arrays (H, W, C); all randomness comes from the `np.random.Generator` passed in.
"""
from __future__ import annotations

import numpy as np
import torch


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad right/bottom so both sides are at least `size` (small images still give full crops)."""
    h, w = img.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return img
    # numpy reflects repeatedly when the pad exceeds the side, so tiny images work too.
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")


def random_crop(images: list[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random `size` x `size` window from each image (reflect-padded first if smaller)."""
    shapes = {im.shape[:2] for im in images}
    if len(shapes) != 1:
        raise ValueError(f"paired images differ in size: {sorted(shapes)}")
    images = [pad_to(im, size) for im in images]
    h, w = images[0].shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return [im[top:top + size, left:left + size] for im in images]


def center_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    """The central `size` x `size` window (the whole side where the image is smaller); 0/None: whole image."""
    if not size:
        return img
    h, w = img.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[top:top + size, left:left + size]


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations: k in 0..7 = (k % 4) quarter turns, then a horizontal flip if k >= 4."""
    out = np.rot90(img, k % 4, axes=(0, 1))
    if k >= 4:
        out = out[:, ::-1]
    return out


def random_dihedral(images: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same uniformly chosen flip/rotation (one of 8) applied to every image."""
    k = int(rng.integers(0, 8))
    return [dihedral(im, k) for im in images]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 or float in [0, 1] -> (3, H, W) float32 tensor in [0, 1]."""
    arr = np.ascontiguousarray(img)
    if not arr.flags.writeable:  # torch.from_numpy warns on read-only memory
        arr = arr.copy()
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)
    if arr.dtype == np.uint8:
        return t.float().div_(255.0)
    return t.float()


# Ranges of random_tone: contrast about the crop's mean, shift of that mean, per-channel gain.
TONE_CONTRAST = (0.45, 1.0)
TONE_SHIFT = (-0.15, 0.25)
TONE_GAIN = (0.92, 1.08)


def draw_tone(rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """The contrast c, shift s and per-channel gains of one random tone, drawn uniformly from TONE_CONTRAST,
    TONE_SHIFT and TONE_GAIN (in that order)."""
    c = rng.uniform(*TONE_CONTRAST)
    s = rng.uniform(*TONE_SHIFT)
    gain = rng.uniform(*TONE_GAIN, size=3)
    return float(c), float(s), gain


def as_unit_float(img: np.ndarray) -> np.ndarray:
    """An image (uint8, or float in [0, 1]) as float32 in [0, 1] (uint8 divided by 255; float unchanged)."""
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else np.asarray(img, dtype=np.float32)


def apply_tone(img: np.ndarray, c: float, s: float, gain: np.ndarray, mean: float | None = None) -> np.ndarray:
    """(x - m) c + m + s, then a gain per channel, clipped to [0, 1], as float32 (img uint8, or float in [0, 1];
    m: `mean`, or the image's own mean over pixels and channels). One affine map per channel: given the same
    `mean`, two images get the same map (a pair keeps its relation, e.g. haze's I = J t + A (1 - t) holds for
    the toned pair with the toned air)."""
    x = as_unit_float(img)
    m = float(x.mean()) if mean is None else float(mean)
    out = ((x - m) * c + (m + s)) * np.asarray(gain, dtype=np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def random_tone(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random global tone change of an image (uint8, or float in [0, 1]), as float32 in [0, 1]:
    (x - m) c + m + s, then a gain per channel, clipped to [0, 1] (m: the image's mean over pixels and
    channels; c, s and the gains drawn uniformly from TONE_CONTRAST, TONE_SHIFT and TONE_GAIN). It turns a
    training photo into a paler, flatter, darker or tinted scene of the same content, which the few training
    photos of the demo lack."""
    return apply_tone(img, *draw_tone(rng))
