"""Held-out evaluation: cases are reproducible, held-out settings differ from training ones, and the scores
are those of the metric on exactly the images compared (an identity model gains nothing, keeps clean photos)."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from dwgn.data.demo import train_photo_paths
from dwgn.data.images import read_image
from dwgn.data.photos import packaged_photos
from dwgn.data.weather import WEATHERS
from dwgn.evaluation import heldout
from dwgn.evaluation.metrics import psnr


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


class Darken(Identity):
    def forward(self, x):
        return x * 0.9


def _darkened_psnr_y(path):
    """PSNR-Y of Darken's output on the photo as the clean-photo check scales it, computed here from its definition."""
    photo = heldout._scaled(read_image(path), heldout.CLEAN_SIDE)
    return psnr(np.clip(np.round(photo.astype(np.float32) / 255 * 0.9 * 255), 0, 255).astype(np.uint8), photo)


@pytest.fixture(scope="module")
def photos():
    return [read_image(p)[:200, :260] for p in packaged_photos("test")[:2]]


def test_cases_are_reproducible_and_heldout_settings_differ(photos):
    a = heldout.weather_cases(photos, crops=1, size=64, heldout=True)
    b = heldout.weather_cases(photos, crops=1, size=64, heldout=True)
    c = heldout.weather_cases(photos, crops=1, size=64, heldout=False)
    assert [w for w, *_ in a] == list(WEATHERS) * 2 and [p for _, p, *_ in a] == [0] * 5 + [1] * 5
    for (_, _, da, ca), (_, _, db, cb), (_, _, dc, cc) in zip(a, b, c):
        assert da.dtype == np.uint8 and da.shape == ca.shape == (64, 64, 3)
        assert np.array_equal(da, db) and np.array_equal(ca, cc)  # same crops, other weather draws
        assert not np.array_equal(da, dc)


def test_identity_model_gains_nothing_and_keeps_clean_photos(tmp_path, monkeypatch):
    paths = packaged_photos("test")[:2]
    result = heldout.evaluate(Identity(), paths, crops=1, size=64)
    assert result["photos"] == [p.name for p in paths] and result["settings"] == "heldout"
    for w in WEATHERS:
        entry = result["weather"][w]
        assert entry["n"] == 2 and entry["restored"] == pytest.approx(entry["input"], abs=1e-9)
    assert result["mean_gain"] == pytest.approx(0.0, abs=1e-9)
    assert all(math.isinf(r["psnr_y"]) for r in result["clean"]["per_photo"])
    dark = heldout.evaluate(Darken(), paths[:1], crops=1, size=64, settings="train")
    assert dark["clean"]["per_photo"][0]["psnr_y"] == pytest.approx(_darkened_psnr_y(paths[0]), abs=0.05)
    assert "mean gain" in heldout.format_report(dark) and "global fit" in heldout.format_report(dark)
    for w in WEATHERS:  # the oracle column is filled; it contains the identity map, so it is not far below the input
        assert result["weather"][w]["global_fit"] > result["weather"][w]["input"] - 0.5
    with pytest.raises(ValueError, match="settings"):
        heldout.evaluate(Identity(), paths, settings="other")


def test_heldout_photos_are_never_training_photos():
    assert not {p.name for p in heldout.heldout_photos()} & {p.name for p in train_photo_paths()}


def test_command_rejects_bad_sizes(capsys):
    assert heldout.main(["--crops", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --crops must be positive")


def test_global_fit_is_the_per_channel_least_squares_affine_map(photos):
    clean = photos[0][:64, :64]
    rng = np.random.default_rng(3)
    # an affine veil per channel (haze-like) is undone up to rounding
    veiled = np.clip(np.round(clean * np.array([0.5, 0.6, 0.4]) + np.array([100.0, 90.0, 120.0])), 0, 255).astype(np.uint8)
    assert np.abs(heldout.global_fit(veiled, clean).astype(int) - clean.astype(int)).max() <= 2
    # any input: the map is numpy's degree-1 polyfit of each channel, rounded and clipped
    noisy = rng.integers(0, 256, clean.shape).astype(np.uint8)
    expected = np.stack([np.polyval(np.polyfit(noisy[..., c].ravel().astype(float), clean[..., c].ravel().astype(float), 1),
                                    noisy[..., c].astype(float)) for c in range(3)], -1)
    expected = np.clip(np.round(expected), 0, 255).astype(np.uint8)
    assert np.abs(heldout.global_fit(noisy, clean).astype(int) - expected.astype(int)).max() <= 1
    # a flat channel cannot be stretched: it becomes the clean channel's mean
    flat = noisy.copy()
    flat[..., 1] = 77
    assert np.all(heldout.global_fit(flat, clean)[..., 1] == np.round(clean[..., 1].mean()))


def test_photos_train_measures_the_training_photos_and_says_it_is_not_a_result(monkeypatch, capsys, tmp_path):
    import dwgn.data.demo as demo
    import dwgn.evaluation.evaluate as evaluate_module

    train = packaged_photos("train")[:2]
    monkeypatch.setattr(demo, "train_photo_paths", lambda: train)
    monkeypatch.setattr(evaluate_module, "load_checkpoint_model", lambda *a, **k: Darken())
    out_json = tmp_path / "r.json"
    assert heldout.main(["--photos", "train", "--crops", "1", "--size", "64", "--json", str(out_json)]) == 0
    report = capsys.readouterr().out
    assert "2 TRAINING photos (for choosing a model, not a result)" in report and "held-out photos" not in report
    result = json.loads(out_json.read_text())
    assert result["photo_set"] == "train" and result["photos"] == [p.name for p in train]
    assert result["clean"]["per_photo"][0]["psnr_y"] == pytest.approx(_darkened_psnr_y(train[0]), abs=0.05)


def test_weathers_subset_gives_the_full_runs_cases_and_says_its_mean_is_over_them(photos, capsys):
    full = heldout.weather_cases(photos, crops=1, size=64, heldout=True)
    some = heldout.weather_cases(photos, crops=1, size=64, heldout=True, weathers=("snow", "haze"))
    assert [(w, p) for w, p, *_ in some] == [("snow", 0), ("haze", 0), ("snow", 1), ("haze", 1)]
    for w, p, degraded, clean in some:
        match = [d for fw, fp, d, _ in full if (fw, fp) == (w, p)]
        assert np.array_equal(degraded, match[0])  # the same seed as in the full run
    paths = packaged_photos("test")[:1]
    result = heldout.evaluate(Darken(), paths, crops=1, size=64, weathers=("rain", "snow"))
    assert list(result["weather"]) == result["weathers"] == ["snow", "rain"]
    gains = [v["restored"] - v["input"] for v in result["weather"].values()]
    assert result["mean_gain"] == pytest.approx(sum(gains) / 2)
    assert "mean gain over snow, rain only" in heldout.format_report(result)
    with pytest.raises(ValueError, match="unknown weathers"):
        heldout.evaluate(Darken(), paths, weathers=("fog",))
    assert heldout.main(["--weathers", "snow,fog"]) == 2
    assert "--weathers 'snow,fog': unknown ['fog']; choose from snow,rainfog" in capsys.readouterr().err


def test_heldout_params_hold_out_only_those_and_the_report_names_them(capsys, assert_mentions):
    paths = packaged_photos("test")[:1]
    result = heldout.evaluate(Identity(), paths, crops=1, size=64, weathers=("haze",), heldout_params=("haze_airlight",))
    assert result["heldout_params"] == ["haze_airlight"]
    assert "heldout (only haze_airlight outside the training ranges) settings" in heldout.format_report(result)
    assert heldout.evaluate(Identity(), paths, crops=1, size=64, weathers=("haze",))["heldout_params"] == sorted(
        heldout.HELDOUT_RANGES)
    with pytest.raises(ValueError) as info:
        heldout.evaluate(Identity(), paths, settings="train", heldout_params=("haze_beta",))
    assert_mentions(str(info.value), "heldout_params", "settings", "'heldout'")
    assert heldout.main(["--heldout-params", "haze_airlight,fog"]) == 2
    assert_mentions(capsys.readouterr().err, "--heldout-params 'haze_airlight,fog'", "['fog']", "streak_angle")
    assert heldout.main(["--heldout-params", "haze_beta", "--settings", "train"]) == 2
    assert_mentions(capsys.readouterr().err, "--heldout-params 'haze_beta'", "--settings heldout")


def test_figure_draws_the_clean_photos_in_and_out(monkeypatch, capsys, tmp_path):
    """--figure: evaluate hands each clean photo, its output and its PSNR-Y to draw_clean, which draws one row per
    photo (lowest PSNR-Y first) with the magnified difference; an empty list is refused."""
    import matplotlib.image as mpimg

    import dwgn.evaluation.evaluate as evaluate_module
    import dwgn.evaluation.results_figure as results_figure

    paths = packaged_photos("test")[:2]
    outputs: list = []
    result = heldout.evaluate(Darken(), paths, crops=1, size=64, weathers=("haze",), clean_outputs=outputs)
    assert [o[0] for o in outputs] == [p.name for p in paths]
    for (name, img, out, score), row, path in zip(outputs, result["clean"]["per_photo"], paths):
        assert np.array_equal(img, heldout._scaled(read_image(path), heldout.CLEAN_SIDE))
        assert score == row["psnr_y"] == pytest.approx(_darkened_psnr_y(path), abs=0.05) and psnr(out, img) == score

    drawn = {}
    real = results_figure.draw_clean
    monkeypatch.setattr(results_figure, "draw_clean", lambda rows, out, title: drawn.update(rows=rows, title=title)
                        or real(rows, out, title))
    monkeypatch.setattr(evaluate_module, "load_checkpoint_model", lambda *a, **k: Darken())
    monkeypatch.setattr(heldout, "fetched_photos", lambda split: [])
    png = tmp_path / "clean.png"
    assert heldout.main(["--crops", "1", "--size", "64", "--weathers", "haze", "--figure", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out
    assert [r[0] for r in drawn["rows"]] == [p.name for p in heldout.heldout_photos([])]
    assert drawn["title"].startswith("Clean held-out photos through")
    one = tmp_path / "one.png"
    results_figure.draw_clean(drawn["rows"][:1], one, "t")
    assert mpimg.imread(png).shape[0] > mpimg.imread(one).shape[0]  # a row per photo
    with pytest.raises(ValueError, match="no photos"):
        results_figure.draw_clean([], tmp_path / "none.png", "t")


class DarkenLarge(Identity):
    """Leaves an image alone up to LIMIT px on its longer side, darkens it (x 0.9) beyond: a size-dependent model."""
    LIMIT = 300

    def forward(self, x):
        return x * 0.9 if max(x.shape[-2:]) > self.LIMIT else x


def test_clean_sides_repeat_the_clean_check_at_each_size(monkeypatch, capsys, tmp_path, assert_mentions):
    # the photo DarkenLarge hurts most comes last, so that "lowest" cannot be the first row by chance
    paths = sorted(packaged_photos("test")[1:3], key=_darkened_psnr_y, reverse=True)
    assert all(max(read_image(p).shape[:2]) > 512 for p in paths)  # so that 256 and 512 px are both downscales
    result = heldout.evaluate(DarkenLarge(), paths, crops=1, size=64, weathers=("haze",), clean_sides=(256, 512, 256))
    by_side = result["clean_by_side"]
    assert list(by_side) == ["256", "512"]  # in the order given, each once
    assert all(math.isinf(r["psnr_y"]) for r in by_side["256"]["per_photo"])  # left alone at 256 px
    expected = [_darkened_psnr_y(p) for p in paths]  # darkened at 512 px, scored as the main clean check scores it
    assert [r["psnr_y"] for r in by_side["512"]["per_photo"]] == pytest.approx(expected, abs=0.05)
    assert [r["psnr_y"] for r in result["clean"]["per_photo"]] == pytest.approx(expected, abs=0.05)
    assert by_side["512"]["min_psnr_y"] == pytest.approx(min(expected), abs=0.05)
    assert by_side["512"]["lowest"] == paths[int(np.argmin(expected))].name
    assert by_side["512"]["mean_psnr_y"] == pytest.approx(sum(expected) / 2, abs=0.05)
    report = heldout.format_report(result)
    assert "clean photos by size" in report and "256 px" in report and "512 px" in report
    assert "clean_by_side" not in heldout.evaluate(DarkenLarge(), paths[:1], crops=1, size=64, weathers=("haze",))
    with pytest.raises(ValueError) as info:
        heldout.evaluate(Identity(), paths[:1], crops=1, size=64, weathers=("haze",), clean_sides=(32,))
    assert_mentions(str(info.value), "clean_sides", "32", "64")

    import dwgn.evaluation.evaluate as evaluate_module
    monkeypatch.setattr(evaluate_module, "load_checkpoint_model", lambda *a, **k: DarkenLarge())
    out_json = tmp_path / "r.json"
    assert heldout.main(["--crops", "1", "--size", "64", "--weathers", "haze", "--clean-sides", "256,512",
                         "--json", str(out_json)]) == 0
    assert list(json.loads(out_json.read_text())["clean_by_side"]) == ["256", "512"]
    for bad in ("256,x", "256,32"):
        assert heldout.main(["--clean-sides", bad]) == 2
        assert_mentions(capsys.readouterr().err, f"--clean-sides '{bad}'", "64", "256,512,768")


def test_tile_restores_in_tiles_so_a_size_dependent_model_sees_only_tiles(monkeypatch, capsys, tmp_path,
                                                                           assert_mentions):
    # DarkenLarge darkens whatever it sees at once beyond 300 px: restored whole (the default) or in 384 px tiles,
    # a 512 px photo is darkened; in 256 px tiles every box it sees is at most 256 px, so the photo comes back as it
    # was. The weather crops (64 px) fit in one tile either way.
    paths = packaged_photos("test")[1:3]
    expected = [_darkened_psnr_y(p) for p in paths]
    kw = dict(crops=1, size=64, weathers=("haze",))
    whole = heldout.evaluate(DarkenLarge(), paths, **kw)
    tiled = heldout.evaluate(DarkenLarge(), paths, tile=256, overlap=64, **kw)
    big_tiles = heldout.evaluate(DarkenLarge(), paths, tile=384, overlap=64, **kw)
    assert [r["psnr_y"] for r in whole["clean"]["per_photo"]] == pytest.approx(expected, abs=0.05)
    assert [r["psnr_y"] for r in big_tiles["clean"]["per_photo"]] == pytest.approx(expected, abs=0.05)
    assert all(r["psnr_y"] > 100 for r in tiled["clean"]["per_photo"])  # unchanged (up to float rounding of Y)
    assert tiled["weather"]["haze"] == whole["weather"]["haze"]
    assert (whole["tile"], whole["overlap"], tiled["tile"], tiled["overlap"]) == (0, 0, 256, 64)
    assert "restored in 256 px tiles (overlap 64 px)" in heldout.format_report(tiled)
    assert "tiles" not in heldout.format_report(whole).splitlines()[0]
    padded = DarkenLarge()
    padded.multiple = 64  # restore rounds the tile up to the network's padding multiple: the record says what ran
    rounded = heldout.evaluate(padded, paths[:1], tile=200, overlap=32, **kw)
    assert rounded["tile"] == 256 and rounded["clean"]["per_photo"][0]["psnr_y"] > 100
    with pytest.raises(ValueError) as info:
        heldout.evaluate(Identity(), paths[:1], tile=128, overlap=128, **kw)
    assert_mentions(str(info.value), "tile 128", "overlap 128", "0 <= overlap < tile")

    import dwgn.evaluation.evaluate as evaluate_module
    monkeypatch.setattr(evaluate_module, "load_checkpoint_model", lambda *a, **k: DarkenLarge())
    out_json = tmp_path / "r.json"
    assert heldout.main(["--crops", "1", "--size", "64", "--weathers", "haze", "--tile", "256", "--overlap", "32",
                         "--json", str(out_json)]) == 0
    saved = json.loads(out_json.read_text())
    assert (saved["tile"], saved["overlap"]) == (256, 32)
    assert all(r["psnr_y"] > 100 for r in saved["clean"]["per_photo"])
    capsys.readouterr()
    assert heldout.main(["--tile", "64", "--overlap", "64"]) == 2
    assert_mentions(capsys.readouterr().err, "--tile 64 --overlap 64", "--tile 256 --overlap 64")


def test_every_image_is_restored_once_and_the_result_records_no_pass_count(capsys):
    paths = packaged_photos("test")[:1]
    result = heldout.evaluate(Darken(), paths, crops=1, size=64, weathers=("rain",))
    (_, _, degraded, clean), = heldout.weather_cases([read_image(paths[0])], 1, 64, True, weathers=("rain",))
    once = np.clip(np.round(degraded.astype(np.float32) / 255 * 0.9 * 255), 0, 255).astype(np.uint8)
    assert result["weather"]["rain"]["restored"] == pytest.approx(psnr(once, clean), abs=0.05)
    assert result["clean"]["per_photo"][0]["psnr_y"] == pytest.approx(_darkened_psnr_y(paths[0]), abs=0.05)
    assert not {"passes", "pass_gate"} & set(result)
    assert "more_passes" not in result["weather"]["rain"] and "passes" not in result["clean"]["per_photo"][0]
    assert "pass" not in heldout.format_report(result)
    for flag in ("--passes", "--pass-gate"):
        with pytest.raises(SystemExit) as exit_:
            heldout.main([flag, "2"])
        assert exit_.value.code == 2 and flag in capsys.readouterr().err
