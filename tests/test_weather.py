"""Weather synthesis: determinism per seed, bounded and weather-typical changes, shapes and errors."""
import numpy as np
import pytest

from dwgn.data.images import read_image
from dwgn.data.photos import TEST_PHOTOS, TRAIN_PHOTOS, packaged_photos
from dwgn.data.weather import WEATHERS, depth_proxy, synthesize

# Mean absolute difference (in [0, 1] units) a weather must cause on a 128x128 natural crop: at
# least visibly there, at most not destroying the scene. Ranges follow the benchmarks' look:
# streaks, flakes and drops touch a fraction of pixels; haze/fog veil every pixel.
EXPECTED_CHANGE = {
    "snow": (0.005, 0.15),
    "rain": (0.003, 0.15),
    "raindrop": (0.003, 0.12),
    "rainfog": (0.05, 0.5),
    "haze": (0.04, 0.5),
}


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    photo = read_image(packaged_photos("test")[0])
    return photo[40:168, 100:228].astype(np.float32) / 255.0


@pytest.mark.parametrize("weather", WEATHERS)
def test_deterministic_per_seed(crop, weather):
    a = synthesize(crop, weather, np.random.default_rng(7))
    b = synthesize(crop, weather, np.random.default_rng(7))
    c = synthesize(crop, weather, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("weather", WEATHERS)
def test_change_is_meaningful_and_bounded(crop, weather):
    low, high = EXPECTED_CHANGE[weather]
    for seed in range(8):
        out = synthesize(crop, weather, np.random.default_rng(seed))
        assert out.shape == crop.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        diff = float(np.abs(out - crop).mean())
        assert low <= diff <= high, f"{weather} seed {seed}: mean abs change {diff:.4f} not in [{low}, {high}]"


@pytest.mark.parametrize("weather", WEATHERS)
def test_odd_sizes_and_uint8_input(weather):
    rng = np.random.default_rng(0)
    img = (rng.random((37, 53, 3)) * 255).astype(np.uint8)
    out = synthesize(img, weather, np.random.default_rng(1))
    assert out.shape == (37, 53, 3)
    # uint8 input is the same image as its float version
    ref = synthesize(img.astype(np.float32) / 255.0, weather, np.random.default_rng(1))
    assert np.allclose(out, ref, atol=1e-6)


def test_rain_only_adds_light(crop):
    out = synthesize(crop, "rain", np.random.default_rng(3))
    assert (out >= crop - 1e-6).all()  # screen blend: streaks never darken the scene
    assert 0.01 < float((out > crop + 0.02).mean()) < 0.6  # a fraction of pixels carry streaks


def test_haze_lowers_contrast_towards_airlight(crop):
    out = synthesize(crop, "haze", np.random.default_rng(3))
    assert out.std() < crop.std()
    assert out.mean() > crop.mean()  # airlight is bright (0.7 .. 1.0), brighter than this photo's mean
    assert crop.mean() < 0.7


def test_raindrops_are_local(crop):
    out = synthesize(crop, "raindrop", np.random.default_rng(3))
    changed = float((np.abs(out - crop).max(axis=2) > 0.01).mean())
    assert 0.02 < changed < 0.7  # drops cover part of the glass, not all of it


def test_depth_proxy_range_and_orientation(crop):
    d = depth_proxy(crop, np.random.default_rng(0))
    assert d.shape == crop.shape[:2]
    assert d.min() == pytest.approx(0.0) and d.max() == pytest.approx(1.0)
    assert d[:20].mean() > d[-20:].mean()  # the top of an outdoor frame is farther away


def test_unknown_weather_and_bad_shape():
    img = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="unknown weather 'fog'"):
        synthesize(img, "fog", np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        synthesize(np.zeros((8, 8), np.float32), "rain", np.random.default_rng(0))


def test_packaged_photos_split_is_disjoint_and_installed():
    train, test = packaged_photos("train"), packaged_photos("test")
    assert len(train) == len(TRAIN_PHOTOS) and len(test) == len(TEST_PHOTOS)
    assert not {p.name for p in train} & {p.name for p in test}
    for p in train + test:
        img = read_image(p)
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256
    with pytest.raises(ValueError, match="split"):
        packaged_photos("val")
