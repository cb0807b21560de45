"""benchmarks/ablation.py: the statistics and the bookkeeping, on fake result sets (no training)."""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"
_spec = importlib.util.spec_from_file_location("ablation", _PATH)
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)

SETS = ("demo-snow", "demo-haze")


def fake_run(mode: str, seed: int, psnr: dict[str, float], ssim: float = 0.8) -> dict:
    return {"mode": mode, "seed": seed, "run_dir": f"runs/ablation/{mode}-s{seed}",
            "results": {k: {"n": 3, "psnr_y": v, "ssim_y": ssim, "psnr_rgb": v - 1, "ssim_rgb": ssim} for k, v in psnr.items()}}


def fake_study() -> list[dict]:
    # none: snow 20,21,22 / haze 14,15,16 over seeds 0..2; half: the same + 3 dB on haze only
    runs = []
    for seed in range(3):
        runs.append(fake_run("none", seed, {"demo-snow": 20.0 + seed, "demo-haze": 14.0 + seed}))
        runs.append(fake_run("half", seed, {"demo-snow": 20.0 + seed, "demo-haze": 17.0 + seed}, ssim=0.7 + 0.1 * seed))
    return runs


def test_summary_means_and_sample_stds_per_set_and_overall():
    summary = ablation.summarise(fake_study(), ["none", "half", "full"])
    assert list(summary) == ["none", "half"]  # a mode without runs is left out, not reported as zeros
    half = summary["half"]
    assert list(half) == [*SETS, "overall"]
    assert half["demo-haze"]["psnr_y_mean"] == pytest.approx(18.0)
    assert half["demo-haze"]["psnr_y_std"] == pytest.approx(statistics.stdev([17.0, 18.0, 19.0]))  # ddof 1 -> 1.0
    # overall: each seed's mean over the sets (18.5, 19.5, 20.5), then mean and std over seeds
    assert half["overall"]["psnr_y_mean"] == pytest.approx(19.5)
    assert half["overall"]["psnr_y_std"] == pytest.approx(1.0)
    assert half["overall"]["ssim_y_mean"] == pytest.approx(0.8)
    assert half["overall"]["ssim_y_std"] == pytest.approx(0.1)
    assert half["overall"]["seeds"] == 3


def test_one_seed_has_no_std_and_no_p_value():
    runs = [fake_run("none", 0, {"demo-snow": 20.0}), fake_run("half", 0, {"demo-snow": 21.0})]
    summary = ablation.summarise(runs, ["none", "half"])
    assert summary["none"]["overall"]["psnr_y_std"] is None
    (c,) = ablation.compare(runs, ["none", "half"])
    assert c["b_minus_a_mean"] == pytest.approx(1.0)
    assert c["b_minus_a_std"] is None and c["paired_t_p"] is None and c["exceeds_seed_spread"] is None
    assert "n/a" in ablation.format_comparisons([c])


def test_compare_pairs_by_seed_and_flags_differences_beyond_the_spread():
    runs = fake_study()
    (c,) = ablation.compare(runs, ["none", "half"])
    # half - none per seed: +1.5 dB overall every time (haze +3 dB, snow 0): exactly paired, zero spread of diffs
    assert c["a"] == "none" and c["b"] == "half" and c["seeds"] == [0, 1, 2]
    assert c["b_minus_a_mean"] == pytest.approx(1.5)
    assert c["b_minus_a_std"] == pytest.approx(0.0)
    assert c["seed_spread"] == pytest.approx(1.0)  # each mode's overall PSNR moves 1 dB per seed
    assert c["exceeds_seed_spread"] is True
    # shift half by only 0.5 dB on haze: +0.25 overall, within the 1 dB seed spread
    small = [fake_run(r["mode"], r["seed"], {k: v["psnr_y"] - (2.5 if r["mode"] == "half" and k == "demo-haze" else 0)
                                             for k, v in r["results"].items()}) for r in runs]
    (c,) = ablation.compare(small, ["none", "half"])
    assert c["b_minus_a_mean"] == pytest.approx(0.25)
    assert c["exceeds_seed_spread"] is False


def test_compare_uses_only_seeds_both_modes_finished_and_gives_a_t_test():
    rng = np.random.default_rng(0)
    runs = [fake_run(m, s, {"demo-snow": 20 + float(rng.normal())}) for s in range(4) for m in ("none", "full")]
    runs.append(fake_run("full", 9, {"demo-snow": 99.0}))  # seed 9 has no `none` twin: ignored
    (c,) = ablation.compare(runs, ["none", "full"])
    assert c["seeds"] == [0, 1, 2, 3]
    diffs = [runs[2 * s + 1]["results"]["demo-snow"]["psnr_y"] - runs[2 * s]["results"]["demo-snow"]["psnr_y"]
             for s in range(4)]
    assert c["b_minus_a_mean"] == pytest.approx(statistics.fmean(diffs))
    t = statistics.fmean(diffs) / (statistics.stdev(diffs) / 2)  # paired t statistic, n = 4
    from scipy.stats import t as student
    assert c["paired_t_p"] == pytest.approx(2 * student.sf(abs(t), 3))


def test_runs_scored_on_different_sets_are_an_error_naming_the_run():
    runs = [fake_run("half", 0, {"demo-snow": 20.0}), fake_run("half", 1, {"demo-haze": 20.0})]
    with pytest.raises(ValueError, match="half-s1.*ablation_eval.json"):
        ablation.summarise(runs, ["half"])


def test_table_has_the_input_row_and_mean_std_cells():
    runs = fake_study()
    baseline = {k: {"psnr_y": 10.0 + i, "ssim_y": 0.5} for i, k in enumerate(SETS)}
    table = ablation.format_table(ablation.summarise(runs, ["none", "half"]), baseline, "psnr_y", 2)
    lines = table.splitlines()
    assert lines[0].split() == ["PSNR-Y", "seeds", *SETS, "overall"]
    assert lines[1].split() == ["input", "-", "10.00", "11.00", "10.50"]
    assert lines[3].split() == ["half", "3", "21.00±1.00", "18.00±1.00", "19.50±1.00"]


def test_center_crop_takes_the_middle_and_keeps_small_sides():
    image = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    crop = ablation.center_crop(image, 4)
    assert crop.shape == (4, 4, 3)
    assert np.array_equal(crop, image[3:7, 8:12])
    assert ablation.center_crop(image, 16).shape == (10, 16, 3)  # the height is smaller than the crop
    assert ablation.center_crop(image, 0) is image


def test_cached_scores_are_reused_only_for_the_same_steps_and_eval_crop(tmp_path: Path):
    assert ablation.cached_scores(tmp_path, 100, 128) is None
    (tmp_path / ablation.CACHE).write_text(json.dumps({"step": 100, "eval_crop": 128, "results": {}}))
    assert ablation.cached_scores(tmp_path, 100, 128)["step"] == 100
    assert ablation.cached_scores(tmp_path, 200, 128) is None  # an extended run is scored again
    assert ablation.cached_scores(tmp_path, 100, 0) is None


def test_train_argv_runs_from_scratch_with_the_studys_settings():
    args = argparse.Namespace(preset="tiny", steps=100, batch_size=4, crop=64)
    argv = ablation.train_argv("full", 2, args, Path("runs/ablation/full-s2"))
    from dwgn.training.config import FinetuneConfig
    from dwgn.training.cli import parse_config

    cfg = parse_config(FinetuneConfig, argv)
    assert cfg.from_scratch and cfg.model.dynamic == "full" and cfg.seed == 2
    assert (cfg.steps, cfg.batch_size, cfg.crop, cfg.val_data) == (100, 4, 64, None)
    assert cfg.out == "runs/ablation/full-s2"


def test_bad_flags_name_the_value():
    with pytest.raises(SystemExit):
        ablation.get_parser().parse_args(["--modes", "none,sometimes"])
    with pytest.raises(argparse.ArgumentTypeError, match="sometimes"):
        ablation._modes("none,sometimes")
    with pytest.raises(argparse.ArgumentTypeError, match="0,1,2"):
        ablation._ints("0,one")
