"""Weather synthesis: determinism per seed, bounded and weather-typical changes, shapes and errors."""
import numpy as np
import pytest

from dwgn.data.images import read_image
from dwgn.data.photos import TEST_PHOTOS, TRAIN_PHOTOS, packaged_photos
from dwgn.data import weather as weather_module
from dwgn.data.weather import HELDOUT_RANGES, SIGNED, TRAIN_RANGES, WEATHERS, depth_proxy, synthesize

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


def test_heldout_ranges_lie_outside_the_training_ranges():
    assert set(HELDOUT_RANGES) == set(TRAIN_RANGES)
    for key, (lo, hi) in HELDOUT_RANGES.items():
        t_lo, t_hi = TRAIN_RANGES[key]
        assert lo < hi and t_lo < t_hi
        if key in SIGNED:  # training is symmetric about 0; held out: a larger magnitude, either sign
            assert t_lo == -t_hi and lo >= t_hi
        else:
            assert hi <= t_lo or lo >= t_hi, key
    draws = [weather_module._draw(np.random.default_rng(s), "snow_wind", True) for s in range(40)]
    assert all(40.0 <= abs(d) <= 50.0 for d in draws) and min(draws) < 0 < max(draws)
    assert all(0.5 <= weather_module._draw(np.random.default_rng(s), "haze_beta", False) <= 1.8 for s in range(40))


@pytest.mark.parametrize("weather", WEATHERS)
def test_heldout_settings_degrade_more(crop, weather):
    change = {True: [], False: []}
    for seed in range(6):
        for heldout in (True, False):
            out = synthesize(crop, weather, np.random.default_rng(seed), heldout=heldout)
            assert out.shape == crop.shape and 0.0 <= out.min() and out.max() <= 1.0
            # haze: denser but darker air, so measure the contrast lost rather than the mean change
            change[heldout].append(float(crop.std() - out.std()) if weather == "haze"
                                   else float(np.abs(out - crop).mean()))
    assert np.mean(change[True]) > np.mean(change[False])


def _haze_reference(crop, seed, airlight_range):
    """I = J t + A (1 - t), t = exp(-beta d): depth, then beta ~ U(0.5, 1.8) (the training range), then the
    airlight grey ~ U(airlight_range) with a +-0.03 tint, in this order from the one generator."""
    rng = np.random.default_rng(seed)
    d = depth_proxy(crop, rng)
    beta = rng.uniform(0.5, 1.8)
    airlight = np.clip(rng.uniform(*airlight_range) + rng.uniform(-0.03, 0.03, size=3), 0.0, 1.0)
    t = np.exp(-beta * d)[..., None]
    return np.clip(crop * t + airlight * (1.0 - t), 0.0, 1.0)


def test_training_haze_follows_the_scattering_model_with_the_original_draws(crop):
    for seed in range(3):  # the training draws: airlight grey ~ U(0.7, 1.0)
        assert np.allclose(synthesize(crop, "haze", np.random.default_rng(seed)),
                           _haze_reference(crop, seed, (0.7, 1.0)), atol=1e-5)


def test_heldout_keys_hold_out_only_the_named_parameters(crop):
    for seed in range(3):  # only the airlight held out: beta from the training range, grey ~ U(0.6, 0.7)
        got = synthesize(crop, "haze", np.random.default_rng(seed), heldout=frozenset({"haze_airlight"}))
        assert np.allclose(got, _haze_reference(crop, seed, (0.6, 0.7)), atol=1e-5)
    for weather in WEATHERS:  # every key = True, no key = False, draw for draw
        for keys, flag in ((frozenset(HELDOUT_RANGES), True), (frozenset(), False)):
            assert np.array_equal(synthesize(crop, weather, np.random.default_rng(5), heldout=keys),
                                  synthesize(crop, weather, np.random.default_rng(5), heldout=flag))
    with pytest.raises(ValueError, match=r"unknown weather parameters \['fog_beta'\]; choose from streak_angle"):
        synthesize(crop, "haze", np.random.default_rng(0), heldout=frozenset({"fog_beta"}))
