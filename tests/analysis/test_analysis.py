"""Weather separability analysis: what the hooks record, the classifier, the JSON and figure, the command."""
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dwgn
from dwgn.analysis import run as analysis
from dwgn.analysis.figure import pca_2d, representative_blocks
from dwgn.analysis.run import main
from dwgn.analysis.separability import (GENERATORS, blocks_of, chance_accuracy, nearest_mean_accuracy,
                                        record_features, ridge_accuracy, separability, standardise, weather_of)
from dwgn.data.transforms import center_crop
from dwgn.training.checkpoint import save_checkpoint

WEATHER_COLOURS = {"snowy": (0.9, 0.9, 0.95), "hazy": (0.6, 0.6, 0.55), "dark": (0.15, 0.2, 0.3)}


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine is shared: one thread is faster than several fighting for two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return dwgn.build_model("tiny", **overrides).eval()


def _weather_image(weather: str, i: int, size: int = 64) -> np.ndarray:
    """A flat weather colour plus noise: the weathers differ far more than images of one weather."""
    rng = np.random.default_rng(100 * len(weather) + i)
    img = np.asarray(WEATHER_COLOURS[weather]) + rng.normal(0, 0.03, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _images(per_weather: int = 3, size: int = 64) -> list:
    return [(w, f"set-{w}", f"{w}_{i}.png", torch.from_numpy(_weather_image(w, i, size)).permute(2, 0, 1).float() / 255)
            for w in WEATHER_COLOURS for i in range(per_weather)]


@pytest.fixture
def paired_sets(tmp_path: Path) -> list[Path]:
    """Three 'weathers' as separate paired folders (input/ + gt/, same names), 3 images each; one set is
    larger than the crop so the centre crop is exercised."""
    folders = []
    for w in WEATHER_COLOURS:
        root = tmp_path / w
        (root / "input").mkdir(parents=True), (root / "gt").mkdir()
        for i in range(3):
            size = 80 if w == "snowy" else 64
            Image.fromarray(_weather_image(w, i, size)).save(root / "input" / f"{i}.png")
            Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(root / "gt" / f"{i}.png")
        folders.append(root)
    return folders


# ------------------------------------------------------------------------------------------- classifier
CLASSIFIERS = pytest.mark.parametrize("accuracy", [nearest_mean_accuracy, ridge_accuracy])


@CLASSIFIERS
def test_classifier_perfect_on_separable_classes(accuracy):
    rng = np.random.default_rng(0)
    labels = [c for c in "abcd" for _ in range(10)]
    centres = {c: rng.normal(0, 5, 30) for c in "abcd"}
    feats = np.stack([centres[c] + rng.normal(0, 1, 30) for c in labels])
    feats = np.concatenate([feats, rng.normal(0, 1, (40, 200))], axis=1)  # plus 200 pure-noise features
    assert accuracy(feats, labels) == 1.0


@CLASSIFIERS
def test_classifier_near_chance_on_shuffled_labels(accuracy):
    rng = np.random.default_rng(1)
    labels = [c for c in "abcd" for _ in range(20)]
    centres = {c: rng.normal(0, 5, 30) for c in "abcd"}
    feats = np.stack([centres[c] + rng.normal(0, 1, 30) for c in labels])
    assert accuracy(feats, labels) == 1.0
    accs = [accuracy(feats, list(rng.permutation(labels))) for _ in range(5)]
    # chance is 0.25; leave-one-out scores sit at or a little below chance on random labels
    assert 0.0 <= np.mean(accs) <= 0.35, accs


def test_leave_one_out_never_sees_the_held_out_image():
    # two classes, one sample each would be unanswerable; one class of one sample is never predicted right
    feats = np.array([[0.0], [0.1], [0.2], [5.0]])
    assert nearest_mean_accuracy(feats, ["a", "a", "a", "b"]) == 0.75
    assert ridge_accuracy(feats, ["a", "a", "a", "b"]) == 0.75
    for accuracy in (nearest_mean_accuracy, ridge_accuracy):
        with pytest.raises(ValueError, match="at least two weathers"):
            accuracy(feats, ["a"] * 4)


def test_chance_and_standardise():
    assert chance_accuracy(list("aabbccdd")) == 0.25
    assert chance_accuracy(list("aaab")) == 0.75
    train = np.array([[1.0, 2.0, 7.0], [3.0, 2.0, 9.0]])
    z, other = standardise(train, np.array([[5.0, 4.0, 8.0]]))
    assert z.shape == (2, 2)  # the constant column is dropped
    np.testing.assert_allclose(z, [[-1, -1], [1, 1]])
    np.testing.assert_allclose(other, [[3.0, 0.0]])


def test_pca_and_representative_blocks():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (20, 5))
    x[:, 0] *= 0.0  # constant: ignored
    scores, share = pca_2d(x)
    assert scores.shape == (20, 2) and share[0] >= share[1] > 0 and share.sum() <= 1
    np.testing.assert_allclose(scores.mean(axis=0), 0, atol=1e-12)
    assert pca_2d(np.ones((5, 1)))[0].shape == (5, 2)
    names = list(blocks_of(_tiny()))
    assert names == ["encoders.0.0", "encoders.1.0", "encoders.2.0", "middle.0",
                     "decoders.0.0", "decoders.1.0", "decoders.2.0"]
    assert representative_blocks(names) == ["encoders.0.0", "middle.0", "decoders.2.0"]


def test_weather_labels_and_crop():
    assert weather_of("snow100k-l") == weather_of("snow100k-s") == "snow"
    assert weather_of("demo-rainfog") == "rainfog" and weather_of("my-folder") == "my-folder"
    x = np.arange(300 * 200 * 3).reshape(300, 200, 3)
    c = center_crop(x, 256)  # the crop `python -m dwgn.analysis --crop` applies
    assert c.shape == (256, 200, 3)
    assert np.array_equal(c, x[22:278, :])  # a window of the original pixels, nothing resampled


# ---------------------------------------------------------------------------------------------- recording
def test_recorded_features_are_what_the_block_computes():
    model = _tiny()
    images = _images(per_weather=2)
    rec = record_features(model, images, max_features=1000)
    n, c = len(images), 16
    block = rec.blocks["encoders.0.0"]
    assert rec.labels == [w for w in WEATHER_COLOURS for _ in range(2)]
    assert rec.channels["encoders.0.0"] == c and rec.channels["middle.0"] == 128
    # generated weights per image: HDMC 1x1 C->3C, grouped 3x3 on 3C with 3*heads groups; HDFN 1x1 C->2C,
    # grouped 3x3 on 2C with C groups; beyond max_features a fixed subset is kept
    assert block.dynamic_size == {"hdmc_1x1": 3 * c * c, "hdmc_3x3": 9 * 3 * c * 3 * c // 3,
                                  "hdfn_1x1": 2 * c * c, "hdfn_3x3": 9 * 2 * c * 2 * c // c}
    assert {p: v.shape for p, v in block.dynamic.items()} == {
        "hdmc_1x1": (n, 768), "hdmc_3x3": (n, 1000), "hdfn_1x1": (n, 512), "hdfn_3x3": (n, 576)}
    assert block.static.shape == (n, 5 * c) and block.alpha.shape == (n,) and block.input.shape == (n, c)
    assert rec.blocks["middle.0"].static.shape == (n, 5 * 128)

    # recompute the first image's block-1 quantities by hand (64x64 needs no padding)
    blk = model.encoders[0][0]
    with torch.no_grad():
        f = model.stem(images[0][3][None])
        h = blk.norm1(f)
        kernel = blk.hdmc.dynamic_qkv[0].generator(h.mean(dim=(2, 3), keepdim=True))  # (1, 3C*C)
        static = torch.cat([blk.hdmc.static_qkv(h).mean(dim=(2, 3)),
                            blk.hdfn.static(blk.norm2(f + blk.hdmc(h))).mean(dim=(2, 3))], dim=1)
        alpha = blk.hdfn.mixing_weight(blk.norm2(f + blk.hdmc(h)))
    np.testing.assert_allclose(block.dynamic["hdmc_1x1"][0], kernel[0].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(block.static[0], static[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(block.input[0], h.mean(dim=(2, 3))[0].numpy(), rtol=1e-5, atol=1e-6)
    assert block.alpha[0] == pytest.approx(alpha.item(), rel=1e-6)
    # the hooks are gone afterwards
    assert all(not m._forward_hooks for m in model.modules())


def test_static_only_network_has_no_dynamic_scores():
    rec = record_features(_tiny(dynamic="none"), _images(per_weather=2))
    assert all(not b.dynamic for b in rec.blocks.values())
    sep = separability(rec)
    assert sep["encoders.0.0"]["dynamic_acc"] is None and sep["encoders.0.0"]["parts"] == {}
    assert 0 <= sep["encoders.0.0"]["static_acc"] <= 1


# -------------------------------------------------------------------------------------------- command
def test_command_on_paired_folders(tmp_path: Path, paired_sets: list[Path], capsys):
    model = _tiny()
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, {"format_version": 1, "model": model.state_dict(), "config": {"model": asdict(model.config)},
                           "step": 0})
    out, figure = tmp_path / "analysis", tmp_path / "figs" / "copy.png"
    sep = main(["--checkpoint", str(ckpt), "--test-set", *map(str, paired_sets), "--out", str(out),
                "--figure", str(figure), "--crop", "64", "--max-per-set", "2"])
    on_disk = json.loads((out / "separability.json").read_text())
    assert on_disk == json.loads(json.dumps(sep))
    blocks = list(blocks_of(model))
    assert [k for k in on_disk if k not in ("chance", "_meta")] == blocks
    assert on_disk["chance"] == pytest.approx(1 / 3)
    for b in blocks:
        r = on_disk[b]
        assert r["n"] == 6 and set(r["parts"]) == set(GENERATORS)
        for key in ("dynamic_acc", "static_acc", "alpha_acc", "input_acc"):
            for acc in (r[key], r["ridge"].get(key, 0.0)):
                assert 0.0 <= acc <= 1.0 and acc * 6 == pytest.approx(round(acc * 6))
    # flat colours: the first block's generated kernels tell these weathers apart without error
    assert on_disk["encoders.0.0"]["dynamic_acc"] == 1.0
    meta = on_disk["_meta"]
    assert meta["n_per_weather"] == {"dark": 2, "hazy": 2, "snowy": 2} and meta["synthetic"] is False
    assert meta["checkpoint"] == str(ckpt) and "leave-one-out" in meta["classifier"]
    for png in (out / "dynamic_weights.png", figure):
        with Image.open(png) as im:
            assert im.width > 800 and im.height > 800
    printed = capsys.readouterr().out
    assert "encoders.0.0" in printed and "chance" in printed


def test_missing_checkpoint_says_how_to_get_one(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(analysis, "DEFAULT_CHECKPOINT", tmp_path / "dwgn-small-demo.pt")
    with pytest.raises(FileNotFoundError, match=r"dwgn-small-demo.pt not found: .*python train.py"):
        main([])
    with pytest.raises(FileNotFoundError, match="none.pt not found: check the path"):
        main(["--checkpoint", str(tmp_path / "none.pt")])


def test_fast_nearest_mean_matches_refitting_every_fold():
    rng = np.random.default_rng(3)
    labels = list(rng.permutation([c for c in "abc" for _ in range(7)]))
    feats = rng.normal(0, 1, (21, 12)) + np.array([{"a": 0.0, "b": 0.8, "c": 1.6}[c] for c in labels])[:, None]
    feats[:, 3] = 2.5  # a constant feature is ignored
    feats[:, 4] *= 1e3  # standardisation: a large-scale feature does not dominate
    y = np.asarray(labels)
    correct = 0
    for i in range(len(y)):  # the definition: refit the standardisation and the class means without image i
        train = np.arange(len(y)) != i
        z, q = standardise(feats[train], feats[i:i + 1])
        means = {c: z[y[train] == c].mean(axis=0) for c in "abc"}
        correct += min(means, key=lambda c: ((q[0] - means[c]) ** 2).sum()) == y[i]
    assert nearest_mean_accuracy(feats, labels) == correct / len(y)
    assert 0.4 < correct / len(y) < 1.0  # an informative but imperfect case, so the comparison means something


def test_closed_form_ridge_matches_refitting_every_fold():
    rng = np.random.default_rng(4)
    labels = list(rng.permutation([c for c in "abc" for _ in range(6)]))
    feats = rng.normal(0, 1, (18, 9)) + np.array([{"a": 0.0, "b": 0.7, "c": 1.4}[c] for c in labels])[:, None]
    y, classes = np.asarray(labels), np.array(["a", "b", "c"])
    (z,) = standardise(feats)
    correct = 0
    for i in range(len(y)):  # the definition: refit intercept (unpenalised) and weights without image i
        train = np.arange(len(y)) != i
        targets = (y[train, None] == classes[None]).astype(float)
        centre = z[train].mean(axis=0)
        zt = z[train] - centre
        weights = np.linalg.solve(zt.T @ zt + 9 * np.eye(9), zt.T @ (targets - targets.mean(axis=0)))  # lambda D
        scores = (z[i] - centre) @ weights + targets.mean(axis=0)
        correct += classes[np.argmax(scores)] == y[i]
    assert ridge_accuracy(feats, labels) == pytest.approx(correct / len(y))
    assert 0.3 < correct / len(y) < 1.0
