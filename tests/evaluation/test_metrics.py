"""PSNR/SSIM pinned against independent references: scikit-image, and the BT.601 Y equation written out."""
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dwgn.evaluation.metrics import all_metrics, psnr, rgb_to_y, ssim


def _pair(h: int = 64, w: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A structured reference (colour gradients, so R, G and B differ) and a noisy copy of it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    ref = np.stack([255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)], axis=-1)
    ref = np.clip(ref + rng.normal(0, 10, ref.shape), 0, 255).astype(np.uint8)
    # channel-dependent corruption: the R channel is hit much harder than B, so a Y with R/B swapped differs
    noise = rng.normal(0, 1, ref.shape) * np.array([25.0, 8.0, 2.0])
    restored = np.clip(ref + noise, 0, 255).astype(np.uint8)
    return restored, ref


def _reference_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr's Y, written from its equation pixel by pixel (R, G, B 8-bit, result not rounded)."""
    h, w, _ = rgb.shape
    y = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            r, g, b = (float(v) for v in rgb[i, j])
            y[i, j] = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return y


def _skimage_ssim(a: np.ndarray, b: np.ndarray, channel_axis: int | None) -> float:
    return structural_similarity(a, b, channel_axis=channel_axis, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255)


def test_rgb_to_y_known_colours():
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    assert rgb_to_y(colours) == pytest.approx(np.array([[16.0, 235.0, 16 + 65.481, 16 + 24.966]]), abs=1e-9)


def test_rgb_metrics_match_scikit_image():
    restored, ref = _pair()
    assert psnr(restored, ref, y_channel=False) == pytest.approx(
        peak_signal_noise_ratio(ref, restored, data_range=255), abs=1e-10)
    assert ssim(restored, ref, y_channel=False) == pytest.approx(_skimage_ssim(restored, ref, 2), abs=1e-10)


def test_y_metrics_match_the_written_out_equation():
    restored, ref = _pair()
    y_restored, y_ref = _reference_y(restored), _reference_y(ref)
    np.testing.assert_allclose(rgb_to_y(restored), y_restored, atol=1e-9)
    mse = np.mean((y_restored - y_ref) ** 2)
    assert psnr(restored, ref) == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-10)
    assert ssim(restored, ref) == pytest.approx(_skimage_ssim(y_restored, y_ref, None), abs=1e-10)


def test_red_blue_swap_changes_y_but_not_rgb_scores():
    restored, ref = _pair()
    swapped = (restored[..., ::-1].copy(), ref[..., ::-1].copy())  # BGR, as cv2.imread gives
    assert abs(psnr(*swapped) - psnr(restored, ref)) > 0.5         # the public-code trap: Y of BGR data
    assert abs(ssim(*swapped) - ssim(restored, ref)) > 1e-3
    assert psnr(*swapped, y_channel=False) == pytest.approx(psnr(restored, ref, y_channel=False), abs=1e-12)


def test_scrambling_reshape_changes_the_scores():
    restored, ref = _pair()
    chw = np.ascontiguousarray(restored.transpose(2, 0, 1))  # as a network returns it
    right = chw.transpose(1, 2, 0)
    wrong = chw.reshape(restored.shape)                       # the trap: reshape instead of transpose
    assert psnr(right, ref) == psnr(restored, ref)
    assert psnr(wrong, ref) < psnr(right, ref) - 5
    assert ssim(wrong, ref) < ssim(right, ref) - 0.1


def test_odd_size_and_crop_border():
    restored, ref = _pair(37, 45, seed=3)
    b = 4
    inner = (restored[b:-b, b:-b], ref[b:-b, b:-b])
    assert psnr(restored, ref, crop_border=b) == pytest.approx(psnr(*inner), abs=1e-12)
    assert ssim(restored, ref, y_channel=False, crop_border=b) == pytest.approx(
        _skimage_ssim(*inner, 2), abs=1e-10)
    assert psnr(restored, ref, crop_border=b) != psnr(restored, ref)


def test_identical_images_and_all_metrics():
    _, ref = _pair()
    scores = all_metrics(ref, ref)
    assert scores["psnr_y"] == math.inf and scores["psnr_rgb"] == math.inf
    assert scores["ssim_y"] == pytest.approx(1.0, abs=1e-12) and scores["ssim_rgb"] == pytest.approx(1.0, abs=1e-12)


def test_bad_inputs_are_clear_errors():
    restored, ref = _pair()
    with pytest.raises(ValueError, match="nothing is resized"):
        psnr(restored[:-1], ref)
    with pytest.raises(TypeError, match="uint8"):
        psnr(restored.astype(np.float32) / 255, ref)
    with pytest.raises(ValueError, match="HxWx3"):
        ssim(restored[..., 0], ref[..., 0])
    with pytest.raises(ValueError, match="crop_border"):
        psnr(restored, ref, crop_border=40)
