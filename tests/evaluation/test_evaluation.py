"""test.py end to end on generated data: scores, metrics.json format, skipped files, folders of photos."""
import csv
import re
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import dwgn
import dwgn.data.datasets
from dwgn.data.datasets import test_sets
from dwgn.data.images import read_image
from dwgn.evaluation.evaluate import evaluate_set, load_checkpoint_model, run
from dwgn.evaluation.metrics import all_metrics
from dwgn.evaluation.results_figure import draw


class Identity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # restore() finds the device from the parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 128.0)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _paired_folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    (root / "input").mkdir(parents=True)
    (root / "gt").mkdir()
    for i, (h, w) in enumerate(sizes):
        gt = _image(h, w, i)
        noisy = np.clip(gt.astype(int) + np.random.default_rng(100 + i).integers(-30, 31, gt.shape), 0, 255)
        Image.fromarray(gt).save(root / "gt" / f"img_{i}.png")
        Image.fromarray(noisy.astype(np.uint8)).save(root / "input" / f"img_{i}.png")
    return root


def test_identity_model_scores_the_inputs_exactly(tmp_path):
    folder = _paired_folder(tmp_path / "pairs", [(40, 56), (37, 45)])
    pairs = test_sets([str(folder)])["pairs"]
    entry, rows = evaluate_set(Identity(), "pairs", pairs, tmp_path / "out")
    refs = [all_metrics(read_image(i), read_image(g)) for i, g in pairs]
    assert entry["n"] == 2 and entry["skipped"] == [] and not entry["synthetic"]
    for key in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
        assert entry[key] == pytest.approx(np.mean([r[key] for r in refs]), abs=1e-12)
    assert entry["input_psnr_y"] == entry["psnr_y"]
    for inp, _ in pairs:  # the restored PNG of an identity model is the input, bit for bit
        np.testing.assert_array_equal(read_image(tmp_path / "out" / inp.name), read_image(inp))


def test_metrics_json_format_and_skipped_files(tmp_path, checkpoint):
    folder = _paired_folder(tmp_path / "mine", [(48, 64), (64, 48)])
    (folder / "input" / "img_9.png").write_bytes(b"not a png")  # unreadable input with a gt
    Image.fromarray(_image(48, 64, 9)).save(folder / "gt" / "img_9.png")
    results = tmp_path / "res"
    summary = run(["--checkpoint", str(checkpoint), "--test-set", str(folder), "--results", str(results)])
    metrics = json.loads((results / "metrics.json").read_text())
    assert list(metrics) == ["mine"]
    entry = metrics["mine"]
    assert set(entry) == {"n", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "input_psnr_y", "skipped", "protocol",
                          "synthetic"}  # one pass of the network: no pass count or gate recorded
    assert entry["n"] == 2 and entry["protocol"] == "Y BT.601, 8-bit, native size"
    assert entry["skipped"] == [str(folder / "input" / "img_9.png")]
    assert [p for p, _ in summary["skipped"]] == entry["skipped"]
    # the scores are those of the saved PNGs against the ground truth
    saved = sorted((results / "mine").glob("*.png"))
    assert [p.name for p in saved] == ["img_0.png", "img_1.png"]
    recomputed = [all_metrics(read_image(p), read_image(folder / "gt" / p.name)) for p in saved]
    for key in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
        assert entry[key] == pytest.approx(np.mean([r[key] for r in recomputed]), abs=1e-12)
    with open(results / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["set"] == "mine" and int(row["n"]) == 2 and float(row["psnr_y"]) == pytest.approx(entry["psnr_y"])
    assert not (results / "results.png").exists()  # the results figure is drawn after the demo sets only
    # ... or on request, from any results folder
    out = draw(results, tmp_path / "fig" / "results.png")
    assert read_image(out).shape[2] == 3


def test_size_mismatch_is_an_error_naming_the_file(tmp_path, assert_mentions):
    folder = _paired_folder(tmp_path / "bad", [(40, 56)])
    Image.fromarray(_image(40, 57, 0)).save(folder / "gt" / "img_0.png")
    pairs = test_sets([str(folder)])["bad"]
    with pytest.raises(ValueError) as info:
        evaluate_set(Identity(), "bad", pairs, tmp_path / "out")
    assert_mentions(str(info.value), str(folder / "input" / "img_0.png"), "56x40", str(folder / "gt" / "img_0.png"),
                    "57x40")


def test_restore_a_folder_of_photos(tmp_path, checkpoint):
    photos = tmp_path / "holiday"
    photos.mkdir()
    formats = {"a.png": (37, 45), "b.jpg": (64, 40), "c.bmp": (30, 70), "d.tif": (50, 50), "e.webp": (33, 66)}
    for name, (h, w) in formats.items():
        Image.fromarray(_image(h, w, len(name))).save(photos / name)
    Image.fromarray(_image(41, 43, 7)[..., 0]).save(photos / "gray.png")
    rgba = np.concatenate([_image(35, 36, 8), np.full((35, 36, 1), 100, np.uint8)], axis=2)
    Image.fromarray(rgba).save(photos / "glass.png")
    (photos / "notes.txt").write_text("not a photo")  # left out with a note (unreadable photos: test_user_errors.py)
    results = tmp_path / "res"
    summary = run(["--checkpoint", str(checkpoint), "--input", str(photos), "--results", str(results)])
    out = results / "holiday"
    expected = {Path(n).stem + ".png" for n in [*formats, "gray.png", "glass.png"]}
    assert {p.name for p in out.iterdir()} == expected
    for name, (h, w) in formats.items():
        assert read_image(out / (Path(name).stem + ".png")).shape == (h, w, 3)
    with Image.open(out / "gray.png") as im:  # gray stays gray
        assert im.mode == "L" and im.size == (43, 41)
    with Image.open(out / "glass.png") as im:  # transparency survives restoration
        assert im.mode == "RGBA" and im.size == (36, 35)
        assert np.all(np.asarray(im)[..., 3] == 100)
    assert summary["skipped"] == []
    assert not (results / "metrics.json").exists()  # no ground truth, no scores


def test_missing_checkpoint_says_how_to_get_one(tmp_path, assert_mentions):
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint_model(tmp_path / "missing.pt", "cpu")
    assert_mentions(str(info.value), str(tmp_path / "missing.pt"), "runs/<stage>-<preset>/")


def test_profile(tmp_path, checkpoint):
    summary = run(["--checkpoint", str(checkpoint), "--profile", "--profile-sizes", "64",
                    "--results", str(tmp_path / "res")])
    (row,) = summary["profile"]
    model = load_checkpoint_model(checkpoint, "cpu")
    assert row["size"] == 64 and row["params"] == sum(p.numel() for p in model.parameters())
    assert row["macs"] > row["params"] and row["latency_s"] > 0
    assert summary["metrics"] == {}  # --profile alone evaluates nothing
    assert json.loads((tmp_path / "res" / "profile.json").read_text()) == summary["profile"]


@pytest.mark.slow  # the default suite covers the same path with the demo checkpoint (test_demo.py)
def test_default_run_on_demo_sets(tmp_path, checkpoint, small_demo, monkeypatch):
    # the shared small demo (2 test pairs per weather) instead of the full one: the same code path in seconds
    monkeypatch.setattr(dwgn.data.datasets, "DEMO_ROOT", small_demo)
    summary = run(["--checkpoint", str(checkpoint), "--results", str(tmp_path / "res"),
                   "--figure", str(tmp_path / "fig" / "results.png")])
    assert set(summary["metrics"]) == {"demo-snow", "demo-rainfog", "demo-raindrop", "demo-rain", "demo-haze"}
    assert all(e["synthetic"] and e["n"] > 0 for e in summary["metrics"].values())
    assert (tmp_path / "fig" / "results.png").is_file() and (tmp_path / "res" / "results.png").is_file()


# ---------------------------------------------------------------- test.py as a command: errors, exit codes, outputs


def test_ordinary_mistakes_are_one_error_line_and_exit_2(tmp_path, checkpoint, capsys, run_cli):
    from dwgn.evaluation.evaluate import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_image(32, 32, 0)).save(photos / "a.png")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(300))
    (tmp_path / "truncated.pt").write_bytes(checkpoint.read_bytes()[:2000])
    cases = {
        "missing.pt not found": ["--checkpoint", tmp_path / "missing.pt", "--input", photos],
        "random.pt cannot be read": ["--checkpoint", tmp_path / "random.pt", "--input", photos],
        "truncated.pt cannot be read": ["--checkpoint", tmp_path / "truncated.pt", "--input", photos],
        "--input .*nowhere does not exist": ["--checkpoint", checkpoint, "--input", tmp_path / "nowhere"],
    }
    for message, argv in cases.items():
        assert run_cli(main, argv + ["--results", tmp_path / "res"], "test.py") == 2, message
        err = capsys.readouterr().err
        assert err.startswith("test.py: error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "res").exists()


def test_nothing_restored_is_not_success(tmp_path, checkpoint, capsys, run_cli):
    from dwgn.evaluation.evaluate import main

    empty, broken = tmp_path / "empty", tmp_path / "broken"
    empty.mkdir(), broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    (broken / "b.png").write_bytes(b"not a png")
    for folder, named in ((empty, ".png, .jpg"), (broken, "broken/a.jpg, ")):
        assert run_cli(main, ["--checkpoint", checkpoint, "--input", folder, "--results", tmp_path / "r"],
                       "test.py") == 2
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and f"--input {folder}" in err and named in err and out == ""
    assert "broken/b.png" in err and not (tmp_path / "r").exists()  # refused before anything was written


def test_a_name_collision_is_refused_before_anything_is_written(tmp_path, checkpoint, capsys, run_cli, assert_mentions):
    from dwgn.evaluation.evaluate import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "photo.jpg", "photo.png"):
        Image.fromarray(_image(32, 32, 0)).save(photos / name)
    assert run_cli(main, ["--checkpoint", checkpoint, "--input", photos, "--results", tmp_path / "r"], "test.py") == 2
    err = capsys.readouterr().err
    assert_mentions(err, str(photos / "photo.jpg"), str(photos / "photo.png"), "rename")
    assert not (tmp_path / "r").exists()


def test_earlier_results_are_kept_unless_overwrite(tmp_path, checkpoint, capsys, run_cli, assert_mentions):
    from dwgn.evaluation.evaluate import main

    folder = _paired_folder(tmp_path / "mine", [(48, 64)])
    argv = ["--checkpoint", checkpoint, "--test-set", folder, "--results", tmp_path / "r"]
    assert run_cli(main, argv, "test.py") == 0
    before = (tmp_path / "r" / "metrics.json").read_bytes()
    (tmp_path / "r" / "metrics.json").write_text("{}")  # an earlier run's scores
    assert run_cli(main, argv, "test.py") == 2
    err = capsys.readouterr().err
    assert_mentions(err, str(tmp_path / "r" / "metrics.json"), "--results NEW_DIR", "--overwrite")
    assert (tmp_path / "r" / "metrics.json").read_text() == "{}"
    assert run_cli(main, argv + ["--overwrite"], "test.py") == 0
    assert (tmp_path / "r" / "metrics.json").read_bytes() == before


def test_no_file_outside_the_results_folder_changes(tmp_path, checkpoint, monkeypatch, run_cli):
    """A synthetic set draws the results figure into --results only; figures/ is written only with --figure."""
    from dwgn.evaluation.evaluate import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "results.png").write_bytes(b"tracked figure")
    folder = _paired_folder(tmp_path / "sets" / "demo-snow", [(48, 64)])
    assert run_cli(main, ["--checkpoint", checkpoint, "--test-set", folder], "test.py") == 0
    assert (tmp_path / "figures" / "results.png").read_bytes() == b"tracked figure"
    assert (tmp_path / "results" / "results.png").is_file()
    assert run_cli(main, ["--checkpoint", checkpoint, "--test-set", folder, "--results", "again",
                          "--figure", "figures/results.png"], "test.py") == 0
    assert (tmp_path / "figures" / "results.png").read_bytes() != b"tracked figure"


def test_unpaired_files_dropped_while_pairing_are_listed(tmp_path, checkpoint, capsys):
    folder = _paired_folder(tmp_path / "mine", [(48, 64), (48, 64)])
    Image.fromarray(_image(48, 64, 5)).save(folder / "input" / "lonely.png")
    Image.fromarray(_image(48, 64, 6)).save(folder / "gt" / "orphan.png")
    run(["--checkpoint", str(checkpoint), "--test-set", str(folder), "--results", str(tmp_path / "r")])
    entry = json.loads((tmp_path / "r" / "metrics.json").read_text())["mine"]
    assert entry["n"] == 2
    assert sorted(Path(p).name for p in entry["skipped"]) == ["lonely.png", "orphan.png"]
    out = capsys.readouterr().out
    assert "lonely.png: unpaired input" in out and "orphan.png: unpaired gt" in out


# ---------------------------------------------------------------- formats are preserved


def test_photo_formats_are_kept_16_bit_gray_and_exif_orientation(tmp_path, checkpoint):
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    gray16 = (np.random.default_rng(0).integers(0, 65536, (40, 36))).astype(np.uint16)
    Image.fromarray(gray16).save(photos / "gray16.png")
    rgb16 = (np.random.default_rng(1).integers(0, 65536, (34, 38, 3))).astype(np.uint16)
    cv2.imwrite(str(photos / "rgb16.png"), rgb16[..., ::-1])
    gray8 = _image(30, 44, 2)[..., 0]
    Image.fromarray(gray8).save(photos / "gray8.png")
    turned = Image.fromarray(_image(30, 50, 3))  # stored 50 wide, 30 high; EXIF says: rotate to 30 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    turned.save(photos / "turned.jpg", exif=exif)
    run(["--checkpoint", str(checkpoint), "--input", str(photos), "--results", str(tmp_path / "r")])
    out = tmp_path / "r" / "photos"
    with Image.open(out / "gray16.png") as im:
        assert im.mode.startswith("I") and im.size == (36, 40) and np.asarray(im).max() > 255
    back = cv2.imread(str(out / "rgb16.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (34, 38, 3) and back.max() > 255
    with Image.open(out / "gray8.png") as im:
        assert im.mode == "L" and im.size == (44, 30)
    with Image.open(out / "turned.png") as im:
        assert im.size == (30, 50)  # upright, as a photo viewer shows it


def test_restore_keeps_16_bit_and_takes_read_only_arrays_without_a_warning(checkpoint):
    import warnings

    model = load_checkpoint_model(checkpoint, "cpu")
    image = _image(40, 48, 0)
    image.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restored = dwgn.restore(model, image)
    assert restored.dtype == np.uint8 and restored.shape == image.shape
    wide = image.astype(np.uint16) * 257  # the same picture in 16 bits
    restored16 = dwgn.restore(model, wide)
    assert restored16.dtype == np.uint16 and restored16.shape == image.shape
    # the same picture: 8-bit and 16-bit outputs agree to within an 8-bit step
    assert np.abs(restored16.astype(float) / 257 - restored).max() <= 1.0


def test_the_readme_own_photos_command_runs_as_written(tmp_path, monkeypatch, run_cli):
    """`python test.py --input my_photos/` on a fresh clone: the shipped demo checkpoint is the default."""
    from dwgn.evaluation.evaluate import DEFAULT_CHECKPOINT, main

    assert DEFAULT_CHECKPOINT.is_file()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_photos").mkdir()
    Image.fromarray(_image(40, 52, 0)).save(tmp_path / "my_photos" / "street.jpg")
    assert run_cli(main, ["--input", "my_photos/"], "test.py") == 0
    assert read_image(tmp_path / "results" / "my_photos" / "street.png").shape == (40, 52, 3)
    assert run_cli(main, ["--input", "my_photos/street.jpg", "--results", "one"], "test.py") == 0  # one photo
    assert (tmp_path / "one" / "street.png").is_file()


def test_16_bit_colour_photos_follow_exif_orientation_like_pillow(tmp_path):
    from PIL import ImageOps

    from dwgn.data.images import orient

    image = _image(3, 5, 0)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(image).save(tmp_path / "o.png", exif=exif)
        with Image.open(tmp_path / "o.png") as im:
            np.testing.assert_array_equal(orient(image, orientation), np.asarray(ImageOps.exif_transpose(im)))


def test_both_readers_refuse_float_and_out_of_range_gray_images_naming_the_file(tmp_path, assert_mentions):
    """Dataset images (read_image) and user photos (read_photo) share the 16-bit gray check and its message."""
    from dwgn.data.images import read_image, read_photo
    from dwgn.errors import DataError

    Image.fromarray(np.full((4, 5), 0.5, np.float32), mode="F").save(tmp_path / "float.tif")
    Image.fromarray(np.full((4, 5), 70000, np.int32), mode="I").save(tmp_path / "wide.tif")
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "ok16.png")
    for reader in (read_image, read_photo):
        with pytest.raises(DataError) as info:
            reader(tmp_path / "float.tif")
        assert_mentions(str(info.value), str(tmp_path / "float.tif"), "8- or 16-bit PNG")
        with pytest.raises(DataError) as info:
            reader(tmp_path / "wide.tif")
        assert_mentions(str(info.value), str(tmp_path / "wide.tif"), "0..65535", "8- or 16-bit PNG")
    assert read_photo(tmp_path / "ok16.png").dtype == np.uint16 and read_photo(tmp_path / "ok16.png").max() == 65535
    assert read_image(tmp_path / "ok16.png").dtype == np.uint8 and read_image(tmp_path / "ok16.png").max() == 255


def test_each_photo_is_the_network_run_once_and_pass_flags_are_refused(tmp_path, checkpoint, capsys):
    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(_image(40, 56, 3)).save(photos / "a.png")
    run(["--checkpoint", str(checkpoint), "--input", str(photos), "--results", str(tmp_path / "r")])
    model = load_checkpoint_model(checkpoint, "cpu")
    img = read_image(photos / "a.png")
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        once = model(x).clamp(0, 1)
        twice = model(once).clamp(0, 1)
    by_hand = [np.round(v[0].permute(1, 2, 0).numpy() * 255) for v in (once, twice)]
    assert np.abs(by_hand[0] - by_hand[1]).max() > 1  # a second run would show
    got = read_image(tmp_path / "r" / "in" / "a.png").astype(int)
    assert np.abs(got - by_hand[0]).max() <= 1  # rounding only
    for flag in ("--passes", "--pass-gate"):
        with pytest.raises(SystemExit) as exit_:
            run(["--checkpoint", str(checkpoint), "--input", str(photos), "--results", str(tmp_path / "r2"), flag, "2"])
        assert exit_.value.code == 2 and flag in capsys.readouterr().err
