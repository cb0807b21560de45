"""The field's reference PSNR and SSIM (docs/DESIGN.md §4), on 8-bit RGB images at native resolution.

Definitions (those of the restoration literature's MATLAB/BasicSR evaluation code):
- Y channel: BT.601 luma of MATLAB's `rgb2ycbcr`, Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255
  with R, G, B the 8-bit values (so Y lies in [16, 235]); kept in float64, not rounded.
- PSNR: peak 255, computed in float64 over every pixel (and channel, for RGB) left after the crop.
- SSIM: 11x11 Gaussian window with sigma 1.5, only the "valid" region (no padding), constants
  C1 = (0.01*255)^2, C2 = (0.03*255)^2, float64; on RGB the per-channel SSIMs are averaged.

Images are HxWx3 uint8 arrays in RGB order, the images exactly as saved to disk. Nothing is resized:
two images of different sizes are an error, not something to fix silently.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

PEAK = 255.0
# MATLAB rgb2ycbcr's Y row for R, G, B in [0, 1]; divided by 255 below because our values are 8-bit.
Y_WEIGHTS = np.array([65.481, 128.553, 24.966])
Y_OFFSET = 16.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
C1 = (0.01 * PEAK) ** 2
C2 = (0.03 * PEAK) ** 2


def _check(image: np.ndarray, name: str) -> np.ndarray:
    """An HxWx3 uint8 RGB image, or a clear error (float images would make the peak ambiguous)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        dtype = getattr(image, "dtype", type(image).__name__)
        raise TypeError(f"{name}: metrics take the saved 8-bit image (uint8 array), got {dtype}; "
                        "convert with np.clip(np.round(x * 255), 0, 255).astype(np.uint8)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected an HxWx3 RGB image, got shape {image.shape}")
    return image


def _pair(restored: np.ndarray, reference: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    restored, reference = _check(restored, "restored"), _check(reference, "reference")
    if restored.shape != reference.shape:
        raise ValueError(f"image sizes differ: restored {restored.shape} vs reference {reference.shape}; "
                         "metrics are computed at native resolution, nothing is resized")
    if crop_border < 0 or 2 * crop_border >= min(restored.shape[:2]):
        raise ValueError(f"crop_border={crop_border} does not fit an image of size {restored.shape[:2]}")
    if crop_border:
        restored = restored[crop_border:-crop_border, crop_border:-crop_border]
        reference = reference[crop_border:-crop_border, crop_border:-crop_border]
    return restored.astype(np.float64), reference.astype(np.float64)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxW float64 BT.601 Y in [16, 235] (MATLAB rgb2ycbcr, not rounded)."""
    return _y(_check(image, "image").astype(np.float64))


def _y(rgb: np.ndarray) -> np.ndarray:
    return Y_OFFSET + rgb @ (Y_WEIGHTS / PEAK)  # (H,W,3) float64 in [0,255] -> (H,W)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK ** 2 / mse)


def _gaussian_window() -> np.ndarray:
    radius = SSIM_WINDOW // 2
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x ** 2) / (2 * SSIM_SIGMA ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter keeping only positions where the whole window fits (valid region)."""
    r = len(window) // 2
    y = correlate1d(correlate1d(x, window, axis=0), window, axis=1)
    return y[r:-r, r:-r]  # (H,W) -> (H-10,W-10)


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after cropping, got {a.shape}")
    w = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a ** 2
    var_b = _filter_valid(b * b, w) - mu_b ** 2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a ** 2 + mu_b ** 2 + C1) * (var_a + var_b + C2))
    return float(ssim_map.mean())


def psnr(restored: np.ndarray, reference: np.ndarray, y_channel: bool = True, crop_border: int = 0) -> float:
    """PSNR in dB (peak 255) of two HxWx3 uint8 RGB images; inf when they are identical."""
    a, b = _pair(restored, reference, crop_border)
    if y_channel:
        a, b = _y(a), _y(b)
    return _psnr(a, b)


def ssim(restored: np.ndarray, reference: np.ndarray, y_channel: bool = True, crop_border: int = 0) -> float:
    """SSIM (Gaussian 11x11, sigma 1.5, valid region) of two HxWx3 uint8 RGB images; RGB: channel mean."""
    a, b = _pair(restored, reference, crop_border)
    if y_channel:
        return _ssim_plane(_y(a), _y(b))
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(3)]))


def all_metrics(restored: np.ndarray, reference: np.ndarray, crop_border: int = 0) -> dict[str, float]:
    """The four numbers test.py reports: psnr_y, ssim_y, psnr_rgb, ssim_rgb."""
    return {
        "psnr_y": psnr(restored, reference, True, crop_border),
        "ssim_y": ssim(restored, reference, True, crop_border),
        "psnr_rgb": psnr(restored, reference, False, crop_border),
        "ssim_rgb": ssim(restored, reference, False, crop_border),
    }
