"""The ranges the synthetic weather draws its parameters from, as docs/DESIGN.md §4.2 ("Weather parameters") lists
them: per weather, for the training and for the held-out settings, every drawn value lies in its range and many
seeded draws reach both ends. The values are observed while the images are made (dwgn.data.weather.recorded_draws),
so a range changed in the table, a key read by the wrong weather or a parameter drawn inline all show."""
import numpy as np
import pytest
import torch
from torch import nn

from dwgn.data.photos import packaged_photos
from dwgn.data.weather import HELDOUT_RANGES, TRAIN_RANGES, WEATHERS, recorded_draws, synthesize
from dwgn.evaluation import heldout

# docs/DESIGN.md §4.2, written out: key -> (training range, held-out range). A key in SIGNED is held out as a
# magnitude in its range with either sign. drop_count is a whole number, its upper end excluded.
DOCUMENTED = {
    "snow_heaviness": ((0.4, 1.6), (1.6, 2.0)),
    "snow_wind": ((-40.0, 40.0), (40.0, 50.0)),
    "streak_angle": ((-30.0, 30.0), (30.0, 40.0)),
    "streak_density": ((0.0015, 0.006), (0.006, 0.008)),
    "streak_length": ((10.0, 40.0), (40.0, 50.0)),
    "rainfog_beta": ((0.5, 1.6), (1.6, 2.0)),
    "rainfog_airlight": ((0.75, 0.95), (0.95, 1.0)),
    "drop_count": ((15, 50), (50, 60)),
    "drop_radius": ((4.0, 26.0), (26.0, 30.0)),
    "haze_beta": ((0.5, 1.8), (1.8, 2.2)),
    "haze_airlight": ((0.7, 1.0), (0.6, 0.7)),
}
SIGNED = {"snow_wind", "streak_angle"}
STREAKS = ("streak_angle", "streak_density", "streak_length")
DRAWN_BY = {
    "snow": {"snow_heaviness", "snow_wind"},
    "rainfog": {*STREAKS, "rainfog_beta", "rainfog_airlight"},
    "raindrop": {"drop_count", "drop_radius"},
    "rain": set(STREAKS),
    "haze": {"haze_beta", "haze_airlight"},
}
IMAGES = 150  # images per weather and setting; each end's last 5 % is missed by 150 uniform draws with p = 0.05 %


def _draws(weather: str, heldout_setting, images: int = IMAGES) -> dict[str, list[float]]:
    img = np.full((12, 12, 3), 0.5, np.float32)
    with recorded_draws() as draws:
        for seed in range(images):
            synthesize(img, weather, np.random.default_rng(seed), heldout=heldout_setting)
    by_key: dict[str, list[float]] = {}
    for key, value in draws:
        by_key.setdefault(key, []).append(float(value))
    return by_key


def _ends(key: str, held: bool) -> tuple[float, float]:
    """The least and the greatest value a draw may take."""
    lo, hi = DOCUMENTED[key][held]
    return (lo, hi - 1) if key == "drop_count" else (lo, hi)


def _inside(key: str, values: list[float], held: bool) -> None:
    lo, hi = _ends(key, held)
    magnitudes = np.abs(values) if held and key in SIGNED else np.asarray(values)
    assert lo <= magnitudes.min() and magnitudes.max() <= hi, (key, held, magnitudes.min(), magnitudes.max(), lo, hi)


def test_the_module_tables_are_the_documented_ranges():
    assert TRAIN_RANGES == {k: train for k, (train, _) in DOCUMENTED.items()}
    assert HELDOUT_RANGES == {k: held for k, (_, held) in DOCUMENTED.items()}


@pytest.mark.parametrize("held", [False, True], ids=["train", "heldout"])
@pytest.mark.parametrize("weather", WEATHERS)
def test_draws_lie_in_the_documented_ranges_and_reach_both_ends(weather, held):
    by_key = _draws(weather, held)
    assert set(by_key) == DRAWN_BY[weather]
    for key, values in by_key.items():
        assert len(values) >= IMAGES
        _inside(key, values, held)
        lo, hi = _ends(key, held)
        near = 0.05 * (hi - lo) + (1 if key == "drop_count" else 0)  # an integer range: its two end values count
        magnitudes = np.abs(values) if held and key in SIGNED else np.asarray(values)
        assert magnitudes.min() <= lo + near and magnitudes.max() >= hi - near, (key, min(magnitudes), max(magnitudes))
        if key in SIGNED:  # both directions of wind and rain
            assert min(values) < 0 < max(values)
    if weather == "raindrop":  # whole numbers, both end values included
        counts = by_key["drop_count"]
        assert all(c == int(c) for c in counts) and {min(counts), max(counts)} == set(_ends("drop_count", held))


@pytest.mark.parametrize("weather", WEATHERS)
def test_holding_out_one_parameter_draws_only_it_from_the_heldout_range(weather):
    for key in sorted(DRAWN_BY[weather]):
        by_key = _draws(weather, frozenset({key}), images=6)
        for other, values in by_key.items():
            _inside(other, values, other == key)


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def test_the_heldout_check_draws_from_the_heldout_ranges_and_its_train_setting_from_the_training_ones():
    paths = packaged_photos("test")[:1]
    for settings, params, held_keys in (("heldout", None, set(DOCUMENTED)), ("train", None, set()),
                                        ("heldout", ("haze_beta", "drop_radius"), {"haze_beta", "drop_radius"})):
        with recorded_draws() as draws:
            heldout.evaluate(Identity(), paths, crops=2, size=64, settings=settings, heldout_params=params)
        assert {k for k, _ in draws} == set(DOCUMENTED)  # every weather ran
        for key, value in draws:
            _inside(key, [value], key in held_keys)
