"""The README's main command, `python test.py`: the shipped demo checkpoint on the embedded test sets."""
import json

import pytest

import dwgn
import dwgn.data.datasets
from dwgn.evaluation.evaluate import DEFAULT_CHECKPOINT, run

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="the demo checkpoint is not in this checkout")


def test_shipped_checkpoint_is_small_and_rebuilds_from_itself():
    assert DEFAULT_CHECKPOINT.stat().st_size < 8 * 2 ** 20
    model = dwgn.load_model(DEFAULT_CHECKPOINT)
    assert model.config == dwgn.build_model("small").config
    assert not model.training


def test_main_command_restores_and_scores_every_demo_set(tmp_path, monkeypatch, small_demo):
    # the same code path as `python test.py` with no flags, on a smaller build of the same demo set
    monkeypatch.setattr(dwgn.data.datasets, "DEMO_ROOT", small_demo)
    summary = run(["--results", str(tmp_path / "results")])
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert set(metrics) == set(dwgn.data.datasets.DEMO_TEST_SETS) == set(summary["metrics"])
    for key, entry in metrics.items():
        assert entry["n"] == 2 and entry["skipped"] == [] and entry["synthetic"] is True
        assert entry["protocol"] == "Y BT.601, 8-bit, native size"
        assert len(list((tmp_path / "results" / key).glob("*.png"))) == 2
    # the trained demo model removes weather: on average it beats the unrestored inputs
    gain = sum(e["psnr_y"] - e["input_psnr_y"] for e in metrics.values()) / len(metrics)
    assert gain > 0.2
    assert (tmp_path / "results" / "results.png").is_file()  # beside the scores; figures/ only with --figure
