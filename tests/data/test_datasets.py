"""Benchmark layouts, bad input, datasets' determinism, the demo set, ImageNet indexing, --check."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dwgn.data import layouts
from dwgn.data.datasets import (CleanImageDataset, PairedDataset, SyntheticWeatherDataset, ensure_demo,
                           pretraining_images, read_image, test_sets, training_pairs)
import dwgn.data.demo
from dwgn.data.demo import build_demo, clean_pairs, read_manifest
from dwgn.data.imagenet import index_imagenet, read_image_list
from dwgn.data.prepare import main as prepare_main
from dwgn.data.transforms import dihedral, random_crop

from conftest import SMALL_DEMO


def img(path: Path, h: int = 24, w: int = 32, value: int | None = None, seed: int = 0) -> Path:
    """A tiny RGB PNG (random, or constant `value`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), value, np.uint8) if value is not None else \
        np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def names(pairs):
    return sorted((a.parent.name + "/" + a.name, b.parent.name + "/" + b.name) for a, b in pairs)


# ------------------------------------------------------------------------------------------ reading
def test_read_image_conversions(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3) and (out == gray[..., None]).all()

    rgba = np.dstack([np.full((3, 4, 3), 9, np.uint8), np.full((3, 4), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    assert (read_image(tmp_path / "opaque.png") == 9).all()

    g16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 257 * 20)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    assert (read_image(tmp_path / "g16.png") == gray[..., None]).all()

    rgb16 = np.zeros((3, 4, 3), np.uint16)
    rgb16[..., 2] = 65535  # BGR on disk: red channel full
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16)
    out = read_image(tmp_path / "rgb16.png")
    assert out.dtype == np.uint8 and (out[..., 0] == 255).all() and (out[..., 1:] == 0).all()

    pal = Image.fromarray(np.full((3, 4, 3), 77, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "p.png")
    assert (read_image(tmp_path / "p.png") == 77).all()


def test_read_image_errors_name_the_file(tmp_path, assert_mentions):
    rgba = np.zeros((3, 4, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    with pytest.raises(ValueError) as info:
        read_image(tmp_path / "clear.png")
    assert_mentions(str(info.value), str(tmp_path / "clear.png"), "alpha min 0", "RGB")
    good = img(tmp_path / "t.png", 64, 64).read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"trunc\.png"):
        read_image(tmp_path / "trunc.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"junk\.jpg"):
        read_image(tmp_path / "junk.jpg")
    with pytest.raises(FileNotFoundError, match=r"nothere\.png"):
        read_image(tmp_path / "nothere.png")


# ------------------------------------------------------------------------------------------ layouts
def test_allweather_list_file(tmp_path, capsys):
    root = tmp_path / "allweather"
    for n in ["snow_a.png", "im_0001_s80_a04.png", "im_0302_s90_a05.png", "input_03.png", "4_rain.png"]:
        img(root / "input" / n)
        img(root / "gt" / n)
    # TransWeather writes '/input/..' or './input/..'; 'input_03.png' must not become 'gt_03.png'.
    (root / "allweather.txt").write_text(
        "/input/snow_a.png\n./input/im_0001_s80_a04.png\ninput/im_0302_s90_a05.png\n"
        "input/input_03.png\ninput/4_rain.png\ninput/missing.png\n\n")
    pairs = training_pairs(root)
    assert names(pairs) == [("input/4_rain.png", "gt/4_rain.png"),
                            ("input/im_0001_s80_a04.png", "gt/im_0001_s80_a04.png"),
                            ("input/input_03.png", "gt/input_03.png"),
                            ("input/snow_a.png", "gt/snow_a.png")]
    out = capsys.readouterr().out
    assert "skipped 1 missing" in out and "missing.png" in out
    assert "skipped 1 Outdoor-Rain test scene" in out and "im_0302_s90_a05.png" in out
    # The list file itself works too, and a folder without a list is paired by name.
    assert names(training_pairs(root / "allweather.txt")) == names(pairs)
    (root / "allweather.txt").unlink()
    assert len(training_pairs(root)) == 4  # 5 files, scene 0302 left out


def test_snow100k_nested_layout_and_unpaired(tmp_path, capsys):
    s = tmp_path / "data" / "Snow100K" / "test" / "Snow100K-S"
    for n in ["beautiful_00001.jpg", "city_00002.jpg"]:
        img(s / "synthetic" / n)
        img(s / "gt" / n)
        img(s / "mask" / n)
    img(s / "synthetic" / "orphan_00003.jpg")
    (s / "synthetic" / "Thumbs.db").write_bytes(b"x")
    sets = test_sets(["snow100k-s"], data_root=tmp_path / "data")
    assert names(sets["snow100k-s"]) == [("synthetic/beautiful_00001.jpg", "gt/beautiful_00001.jpg"),
                                         ("synthetic/city_00002.jpg", "gt/city_00002.jpg")]
    out = capsys.readouterr().out
    assert "skipped 1 unpaired input" in out and "orphan_00003.jpg" in out
    assert "skipped 1 not an image" in out and "Thumbs.db" in out


def test_outdoor_rain_test1_naming(tmp_path):
    t = tmp_path / "Outdoor-Rain" / "test1"
    for n in ["im_0301_s80_a04.png", "im_0301_s95_a06.png", "im_0302_s80_a04.png"]:
        img(t / "input" / n)
    img(t / "gt" / "im_0301.png")
    img(t / "gt" / "im_0302.png")
    sets = test_sets(["outdoor-rain"], data_root=tmp_path)
    assert names(sets["outdoor-rain"]) == [("input/im_0301_s80_a04.png", "gt/im_0301.png"),
                                           ("input/im_0301_s95_a06.png", "gt/im_0301.png"),
                                           ("input/im_0302_s80_a04.png", "gt/im_0302.png")]
    assert layouts.scan_set(t).layout == "outdoor-rain"


def test_raindrop_a_and_b(tmp_path):
    a = tmp_path / "RainDrop" / "test_a"
    b = tmp_path / "RainDrop" / "test_b"
    for i in range(2):
        img(a / "data" / f"{i}_rain.png")
        img(a / "gt" / f"{i}_clean.png")
    for i in range(3):
        img(b / "input" / f"{i}_rain.jpg")
        img(b / "gt" / f"{i}_clean.jpg")
    sets = test_sets(["raindrop-a", "raindrop-b"], data_root=tmp_path)
    assert names(sets["raindrop-a"]) == [("data/0_rain.png", "gt/0_clean.png"), ("data/1_rain.png", "gt/1_clean.png")]
    assert len(sets["raindrop-b"]) == 3
    assert layouts.scan_set(a).layout == "raindrop"


def test_missing_named_set_lists_places(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        test_sets(["raindrop-a"], data_root=tmp_path)
    assert "raindrop/test_a" in str(e.value) and "DWGN_DATA" in str(e.value)
    with pytest.raises(FileNotFoundError, match="unknown test set 'nope'"):
        test_sets(["nope"], data_root=tmp_path)


def test_authors_mix(tmp_path):
    for sub in ["snow", "haze", "night"]:
        for split in ["train", "test"]:
            img(tmp_path / "mix" / sub / split / "input" / f"{sub}_1.png")
            img(tmp_path / "mix" / sub / split / "label" / f"{sub}_1.png")
    assert names(training_pairs(tmp_path / "mix")) == [("input/haze_1.png", "label/haze_1.png"),
                                                       ("input/night_1.png", "label/night_1.png"),
                                                       ("input/snow_1.png", "label/snow_1.png")]
    sets = test_sets([str(tmp_path / "mix")])
    assert sorted(sets) == ["mix-haze", "mix-night", "mix-snow"]
    assert all(p[0][0].parts[-4] == "mix" or "test" in p[0][0].parts for p in sets.values())


def test_plain_folder_key_and_leakage_filter(tmp_path, capsys):
    f = tmp_path / "mine"
    for n in ["a.png", "im_0350_s80_a04.png", "im_0351_s80_a04.png"]:
        img(f / "input" / n)
        img(f / "gt" / n)
    assert list(test_sets([str(f)])) == ["mine"]
    assert len(test_sets([str(f)])["mine"]) == 3  # test sets keep every scene
    assert names(training_pairs(f)) == [("input/a.png", "gt/a.png"),
                                        ("input/im_0351_s80_a04.png", "gt/im_0351_s80_a04.png")]
    assert "im_0350_s80_a04.png" in capsys.readouterr().out


def test_empty_and_missing_folders(tmp_path, assert_mentions):
    (tmp_path / "e" / "input").mkdir(parents=True)
    (tmp_path / "e" / "gt").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        training_pairs(tmp_path / "e")
    assert_mentions(str(info.value), str(tmp_path / "e" / "input"), str(tmp_path / "e" / "gt"), ".png")
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        training_pairs(tmp_path / "x")
    assert_mentions(str(info.value), str(tmp_path / "x"), "input", "gt", "dataset/README.md")
    with pytest.raises(FileNotFoundError) as info:
        training_pairs(tmp_path / "nowhere")
    assert_mentions(str(info.value), str(tmp_path / "nowhere"), "input/ and gt/", "dataset/README.md")


def _raindrop_a_with_problems(tmp_path: Path, monkeypatch) -> Path:
    a = tmp_path / "RainDrop" / "test_a"
    for i in range(3):
        img(a / "data" / f"{i}_rain.png")
        img(a / "gt" / f"{i}_clean.png", h=24 if i < 2 else 30)  # pair 2: size mismatch
    img(a / "gt" / "9_clean.png")  # unpaired gt
    monkeypatch.setitem(layouts.EXPECTED_PAIRS, "raindrop-a", 2)
    monkeypatch.setitem(layouts.EXPECTED_PAIRS, "raindrop-b", 3)
    return a


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_check_only_reads_and_prints_a_short_table(tmp_path, capsys, monkeypatch):
    a = _raindrop_a_with_problems(tmp_path, monkeypatch)
    img(tmp_path / "Snow100K-S" / "input" / "x.png")
    img(tmp_path / "Snow100K-S" / "gt" / "x.png")
    before = _tree(tmp_path)
    assert prepare_main(["--check", str(tmp_path)]) == 1  # problems found
    assert _tree(tmp_path) == before  # byte-identical: nothing written
    out, err = capsys.readouterr()
    assert err == ""  # no progress bars when not on a terminal
    lines = out.splitlines()
    assert lines[0].split() == ["set", "name", "layout", "pairs", "expected", "problems"]
    row = next(line for line in lines if line.startswith(str(a)))
    assert row.split()[1:] == ["raindrop-a", "raindrop", "2", "2", "3"]
    assert "    unpaired gt (1): gt/9_clean.png" in lines
    assert "    size mismatch (1): data/2_rain.png is 32x24, gt/2_clean.png is 32x30" in lines
    assert any("looks like raindrop-b" in line for line in lines)
    assert len(lines) <= 8


def test_check_writes_lists_only_when_asked(tmp_path, capsys, monkeypatch):
    a = _raindrop_a_with_problems(tmp_path, monkeypatch)
    rc = prepare_main(["--check", str(tmp_path), "--json", "--write-lists"])
    report = json.loads(capsys.readouterr().out)
    r = report[str(a)]
    assert rc == 1 and r["layout"] == "raindrop" and r["name"] == "raindrop-a" and r["pairs"] == 2
    assert r["problems"]["unpaired gt"] == ["gt/9_clean.png"] and r["list"] == str(a / layouts.PAIRS_LIST)
    # The loaders now read the checked list (size-mismatched pair left out) ...
    assert names(layouts.scan_set(a).pairs) == [("data/0_rain.png", "gt/0_clean.png"),
                                                ("data/1_rain.png", "gt/1_clean.png")]
    # ... until the folder changes: then they rescan and say so.
    img(a / "data" / "5_rain.png")
    img(a / "gt" / "5_clean.png")
    assert len(layouts.scan_set(a).pairs) == 4
    assert "out of date" in capsys.readouterr().out


def test_check_without_a_data_set_is_one_error_line(tmp_path, capsys, run_cli):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    for where in (tmp_path / "empty", tmp_path / "nowhere"):
        assert run_cli(prepare_main, ["--check", where], "dataset/prepare.py") == 2
        err = capsys.readouterr().err
        assert err.startswith("dataset/prepare.py: error: ") and err.count("\n") == 1
    assert "does not exist" in err
    assert run_cli(prepare_main, ["--check", tmp_path / "empty"], "dataset/prepare.py") == 2
    assert "no data set found at or below" in capsys.readouterr().err


def test_list_entries_are_resolved_exactly_and_stay_inside_the_root(tmp_path, assert_mentions):
    root = tmp_path / "set"
    img(root / "input" / ".snow.png"), img(root / "gt" / ".snow.png")
    img(root / "input" / "snow.png", seed=1), img(root / "gt" / "snow.png", seed=1)
    (root / "list.txt").write_text("./input/.snow.png\t./gt/.snow.png\n")
    (pair,) = layouts.scan_list(root / "list.txt").pairs
    assert pair == (root / "input" / ".snow.png", root / "gt" / ".snow.png")
    (root / "bare.txt").write_text(".snow.png\n")  # a bare name: input/ and gt/ beside the list
    assert layouts.scan_list(root / "bare.txt").pairs == [pair]
    img(tmp_path / "other" / "x.png")
    (root / "list.txt").write_text("../other/x.png\tgt/snow.png\n")
    with pytest.raises(ValueError) as info:
        layouts.scan_list(root / "list.txt")
    assert_mentions(str(info.value), "../other/x.png", str(root))


def test_paired_dataset_size_mismatch_names_both(tmp_path, assert_mentions):
    pairs = [(img(tmp_path / "in" / "a.png", 20, 20), img(tmp_path / "gt" / "a.png", 20, 22))]
    with pytest.raises(ValueError) as info:
        PairedDataset(pairs, crop=16)[0]
    assert_mentions(str(info.value), str(tmp_path / "in" / "a.png"), "20x20", str(tmp_path / "gt" / "a.png"), "22x20",
                    "python dataset/prepare.py --check")


# ------------------------------------------------------------------------------------------ datasets
def test_paired_dataset_deterministic_and_identical_on_both(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(gt).save(tmp_path / "g.png")
    Image.fromarray(255 - gt).save(tmp_path / "i.png")
    ds = PairedDataset([(tmp_path / "i.png", tmp_path / "g.png")], crop=16, augment=True)
    x1, y1 = ds[(0, 5)]
    x2, y2 = ds[(0, 5)]
    assert x1.shape == (3, 16, 16) and x1.dtype == torch.float32
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.allclose(x1, 1.0 - y1, atol=1e-6)  # same crop and flip on input and target
    assert torch.equal(ds[0][0], ds[(0, 0)][0])  # int index i means seed i
    crops = {ds[(0, s)][1].numpy().tobytes() for s in range(6)}
    assert len(crops) > 1
    x_small, _ = PairedDataset([(tmp_path / "i.png", tmp_path / "g.png")], crop=64)[(0, 1)]
    assert x_small.shape == (3, 64, 64)  # reflect-padded
    full, _ = PairedDataset([(tmp_path / "i.png", tmp_path / "g.png")], crop=None, augment=False)[0]
    assert torch.allclose(full, torch.from_numpy(255 - gt).permute(2, 0, 1).float() / 255)


def test_dihedral_group_and_crop():
    a = np.arange(12).reshape(3, 4, 1)
    outs = {dihedral(a, k).tobytes() + bytes(dihedral(a, k).shape) for k in range(8)}
    assert len(outs) == 8
    x = np.arange(6 * 5).reshape(6, 5, 1)
    c1, c2 = random_crop([x, x + 100], 4, np.random.default_rng(3))
    assert np.array_equal(c1 + 100, c2)
    big = random_crop([x], 9, np.random.default_rng(0))[0]
    assert big.shape == (9, 9, 1) and big[0, 5, 0] == x[0, 3, 0]  # reflect: ...3 4 | 3 ...


def test_clean_and_synthetic_datasets(tmp_path, assert_mentions):
    p = [img(tmp_path / "small.png", 50, 70, seed=1), img(tmp_path / "big.png", 200, 300, seed=2)]
    ds = CleanImageDataset(p, crop=64, length=10)
    assert len(ds) == 10 and ds[3].shape == (3, 64, 64)
    assert torch.equal(ds[(3, 9)], ds[(3, 9)]) and not torch.equal(ds[(3, 9)], ds[(3, 10)])
    with pytest.raises(IndexError):
        ds[10]
    sw = SyntheticWeatherDataset(p, crop=64, weathers=("haze",), length=4)
    deg, clean = sw[(1, 4)]
    deg2, clean2 = sw[(1, 4)]
    assert torch.equal(deg, deg2) and torch.equal(clean, clean2) and not torch.equal(deg, clean)
    with pytest.raises(ValueError) as info:
        SyntheticWeatherDataset(p, weathers=("fog",))
    assert_mentions(str(info.value), "'fog'", "snow, rainfog, raindrop, rain, haze")


def test_pretraining_images_default_and_imagenet_index(tmp_path, capsys):
    photos = pretraining_images(None)
    assert "packaged photos" in capsys.readouterr().out and all(p.is_file() for p in photos)
    root = tmp_path / "train"
    img(root / "n01" / "a.JPEG")
    img(root / "n02" / "b.jpeg")
    (root / "n02" / "notes.txt").write_text("x")
    out = tmp_path / "list.txt"
    # A run killed after class n01: its part is kept, so the restart reuses it (we plant a marker).
    parts = tmp_path / "list.txt.parts"
    parts.mkdir()
    (parts / "n01.txt").write_text("n01/a.JPEG\n")
    path, count = index_imagenet(root, out, progress=False)
    assert count == 2 and not parts.exists()
    assert [p.relative_to(root).as_posix() for p in read_image_list(out)] == ["n01/a.JPEG", "n02/b.jpeg"]
    assert [p.name for p in pretraining_images(out)] == ["a.JPEG", "b.jpeg"]
    assert [p.name for p in pretraining_images(root)] == ["a.JPEG", "b.jpeg"]


# ------------------------------------------------------------------------------------------ demo
def test_reduced_demo_layouts_and_determinism(tmp_path, small_demo, assert_mentions):
    root = small_demo  # 1 training and 2 test pairs per weather (conftest.SMALL_DEMO)
    manifest = read_manifest(root)
    n_clean = round(0.15 / 0.85 * 5)  # clean -> clean pairs: 15 % of all training pairs
    assert clean_pairs(1) == n_clean == manifest["clean_pairs"] == 1 and clean_pairs(2) == 2
    assert manifest["synthetic"] is True and manifest["train_pairs"] == 5 + n_clean
    pairs = training_pairs(root / "train")
    assert len(pairs) == 5 + n_clean
    assert (root / "train" / "allweather.txt").read_text().splitlines() == [
        "input/snow_0000.png", "input/im_0001_s80_a04.png", "input/raindrop_0000.png", "input/rain_0000.png",
        "input/haze_0000.png", "input/clean_0000.png"]
    clean = [(i, g) for i, g in pairs if i.name.startswith("clean_")]
    assert len(clean) == n_clean and all(i.read_bytes() == g.read_bytes() for i, g in clean)
    assert all(i.read_bytes() != g.read_bytes() for i, g in pairs if not i.name.startswith("clean_"))
    t = root / "test"
    assert names(layouts.scan_set(t / "demo-rainfog").pairs) == [
        ("input/im_0301_s80_a04.png", "gt/im_0301.png"), ("input/im_0301_s90_a05.png", "gt/im_0301.png")]
    assert names(layouts.scan_set(t / "demo-raindrop").pairs)[0] == ("data/0_rain.png", "gt/0_clean.png")
    assert (t / "demo-snow" / "synthetic" / "snow_0000.png").is_file()
    for key in ["demo-rain", "demo-haze"]:
        assert len(layouts.scan_set(t / key).pairs) == 2
    again = build_demo(tmp_path / "demo2", **SMALL_DEMO)
    for a in sorted(root.rglob("*.png")):
        assert a.read_bytes() == (again / a.relative_to(root)).read_bytes()
    assert ensure_demo(root) == root  # built already: nothing rebuilt
    with pytest.raises(FileExistsError) as info:
        img(tmp_path / "other" / "x.png")
        build_demo(tmp_path / "other")
    assert_mentions(str(info.value), str(tmp_path / "other"), "manifest.json", "--out", "$DWGN_DEMO")


@pytest.mark.slow
def test_full_demo_builds(tmp_path):
    root = ensure_demo(tmp_path / "demo")
    sets = test_sets([str(root / "test" / k) for k in ["demo-snow", "demo-rainfog", "demo-raindrop"]])
    assert len(training_pairs(root / "train")) == (600 if len(read_manifest(root)["photos"]["train"]) == 7 else 2000) + \
        read_manifest(root)["clean_pairs"]
    assert {k: len(v) for k, v in sets.items()} == {"demo-snow": 12, "demo-rainfog": 12, "demo-raindrop": 12}


def test_demo_trains_on_fetched_photos_when_present(tmp_path, monkeypatch):
    extra = tmp_path / "photos" / "train" / "extra.png"
    img(extra, h=300, w=400)
    monkeypatch.setattr(dwgn.data.demo, "fetched_photos", lambda split: [extra] if split == "train" else [])
    root = build_demo(tmp_path / "demo", train_per_weather=1, test_per_weather=1, clean_share=0.0)
    manifest = read_manifest(root)
    assert manifest["photos"]["train"][-1] == "extra.png" and len(manifest["photos"]["train"]) == 8
    assert manifest["train_pairs"] == 5 and manifest["clean_pairs"] == 0
    assert dwgn.data.demo.default_train_per_weather(8) == 400 and dwgn.data.demo.default_train_per_weather(7) == 120
    assert ensure_demo(root) == root  # same photos: not rebuilt
    with pytest.raises(ValueError, match="clean_share"):
        build_demo(tmp_path / "bad", clean_share=1.0)


def test_prepare_demo_flags_set_pairs_per_weather_and_clean_share(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dwgn.data.demo, "fetched_photos", lambda split: [])  # the packaged photos only
    out = tmp_path / "demo"
    assert prepare_main(["--demo", "--out", str(out), "--train-per-weather", "2", "--clean-share", "0.5"]) == 0
    manifest = read_manifest(out)
    assert manifest["train_per_weather"] == 2 and manifest["clean_share"] == 0.5
    assert manifest["clean_pairs"] == clean_pairs(2, 0.5) == 10 and manifest["train_pairs"] == 10 + 10
    for argv, message in [(["--demo", "--clean-share", "1.0"], "--clean-share must be in [0, 1)"),
                          (["--demo", "--train-per-weather", "0"], "--train-per-weather must be at least 1"),
                          (["--check", str(out), "--clean-share", "0.2"], "go with --demo")]:
        with pytest.raises(SystemExit):
            prepare_main(argv)
        assert message in capsys.readouterr().err


def test_demo_rainfog_training_names_never_use_the_outdoor_rain_test_scenes():
    """Past 900 rain+fog pairs the scene numbers would reach 301-350, which every training scan removes (they
    are Outdoor-Rain's test scenes): the builder skips them, so a large demo set loses no pairs."""
    from dwgn.data.demo import _train_name
    from dwgn.data.layouts import OUTDOOR_RAIN_TEST_SCENES

    names = [_train_name("rainfog", j) for j in range(1600)]
    scenes = {int(n[3:7]) for n in names}
    assert len(set(names)) == 1600 and not scenes & set(OUTDOOR_RAIN_TEST_SCENES)
    assert names[0] == "im_0001_s80_a04.png" and names[899] == "im_0300_s100_a06.png"  # as before up to 900
    assert names[900] == "im_0351_s80_a04.png"


def test_clean_crop_makes_whole_steps_clean_at_their_own_size(tmp_path, assert_mentions):
    """clean_crop=72, crop=24: the clean-or-weather choice comes from the step seed (the sampler's third item), so
    every pair of a step is the same kind and size (a batch stacks); a clean pair is the photo's 72 px crop (some
    dihedral of a 72 px window of the photo), a weather pair a 24 px one; about clean_share of the steps are clean.
    clean_crop equal to the crop (or None) gives the samples of before; a plain (index, seed) draws from the seed."""
    from dwgn.training.sampler import StepSampler

    path = img(tmp_path / "a.png", 100, 90, seed=4)
    photo = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    ds = SyntheticWeatherDataset([path], crop=24, weathers=("haze",), length=50, clean_share=0.4, clean_crop=72)
    kinds = []
    for items in StepSampler(len(ds), 3, seed=5, start=0, steps=60):
        pairs = [ds[item] for item in items]
        clean = {torch.equal(inp, gt) for inp, gt in pairs}
        sides = {inp.shape[-1] for inp, _ in pairs}
        assert len(clean) == 1 and sides == ({72} if clean == {True} else {24})
        kinds.append(clean.pop())
        if kinds[-1]:  # the crop is a window of the photo, up to a flip/rotation
            inp = pairs[0][0]
            windows = {(y, x) for y in range(photo.shape[1] - 71) for x in range(photo.shape[2] - 71)
                       for view in [torch.rot90(inp, k, (1, 2)) for k in range(4)]
                       + [torch.rot90(inp.flip(2), k, (1, 2)) for k in range(4)]
                       if torch.allclose(view, photo[:, y:y + 72, x:x + 72], atol=1e-6)}
            assert windows
    assert 0.25 < sum(kinds) / len(kinds) < 0.55
    same = SyntheticWeatherDataset([path], crop=24, length=10, clean_share=0.3, clean_crop=24)
    plain = SyntheticWeatherDataset([path], crop=24, length=10, clean_share=0.3)
    assert same.clean_crop is None
    assert all(torch.equal(same[(i, i, 7)][0], plain[(i, i)][0]) for i in range(10))
    solo = [ds[(i, 100 + i)] for i in range(40)]  # no step seed: each sample chooses from its own seed
    assert {torch.equal(*p) for p in solo} == {True, False}
    assert all((p[0].shape[-1] == 72) == torch.equal(*p) for p in solo)
    with pytest.raises(ValueError) as info:
        SyntheticWeatherDataset([path], crop=24, clean_crop=-8)
    assert_mentions(str(info.value), "clean_crop", "-8", "None")


def test_synthetic_weather_clean_share(tmp_path, assert_mentions):
    p = [img(tmp_path / "a.png", 120, 150, seed=3)]
    sw = SyntheticWeatherDataset(p, crop=48, weathers=("haze",), length=200, clean_share=0.3)
    clean = [torch.equal(*sw[(i, 1000 + i)]) for i in range(200)]
    assert 0.2 < sum(clean) / len(clean) < 0.4  # about clean_share of the pairs are clean -> clean
    assert [torch.equal(*sw[(i, 1000 + i)]) for i in range(200)] == clean  # the same seeds, the same choice
    assert not any(torch.equal(*SyntheticWeatherDataset(p, crop=48, weathers=("haze",), length=50)[(i, i)])
                   for i in range(50))  # the default keeps every pair degraded
    with pytest.raises(ValueError) as info:
        SyntheticWeatherDataset(p, clean_share=1.0)
    assert_mentions(str(info.value), "clean_share", "[0, 1)", "1.0")


def test_tone_share_gives_clean_and_weather_pairs_a_global_tone(tmp_path, assert_mentions):
    """tone_share=1: every crop is toned first, (x - mean) c + mean + s times a gain per channel, clipped, with c,
    s and the gains the sample's next draws after crop and dihedral (reference written here from that equation);
    clean pairs keep the toned crop as input and target. tone_share=0 draws nothing: the samples of before."""
    from dwgn.data.transforms import TONE_CONTRAST, TONE_GAIN, TONE_SHIFT

    path = img(tmp_path / "a.png", 70, 80, seed=5)
    photo = np.asarray(Image.open(path).convert("RGB"))
    toned = SyntheticWeatherDataset([path], crop=32, length=40, clean_share=0.5, tone_share=1.0)
    n_clean = 0
    for i in range(40):
        rng = np.random.default_rng(i)
        top, left, k = rng.integers(0, 70 - 32 + 1), rng.integers(0, 80 - 32 + 1), rng.integers(0, 8)
        crop = dihedral(photo[top:top + 32, left:left + 32], int(k)).astype(np.float64) / 255.0
        rng.random()  # the tone_share draw
        c, s, gain = rng.uniform(*TONE_CONTRAST), rng.uniform(*TONE_SHIFT), rng.uniform(*TONE_GAIN, size=3)
        expected = np.clip(((crop - crop.mean()) * c + crop.mean() + s) * gain, 0.0, 1.0)
        degraded, clean = toned[(i, i)]
        np.testing.assert_allclose(clean.permute(1, 2, 0).numpy(), expected, atol=2e-6)
        if torch.equal(degraded, clean):
            n_clean += 1
    assert 10 < n_clean < 30  # clean -> clean pairs are toned too
    plain = SyntheticWeatherDataset([path], crop=32, length=10, clean_share=0.5)
    untoned = SyntheticWeatherDataset([path], crop=32, length=10, clean_share=0.5, tone_share=0.0)
    for i in range(10):
        assert all(torch.equal(a, b) for a, b in zip(plain[(i, i)], untoned[(i, i)]))
    with pytest.raises(ValueError) as info:
        SyntheticWeatherDataset([path], tone_share=1.5)
    assert_mentions(str(info.value), "tone_share", "[0, 1]", "1.5")


def test_pair_tone_share_tones_a_weather_pair_after_the_weather_with_one_map_on_both_sides(tmp_path, assert_mentions):
    """pair_tone_share=1: a weather pair (D, J) comes out as (f(D), f(J)) with one affine map per channel,
    f(x) = clip(((x - m) c + m + s) g), m the clean crop's mean, c, s, g in the tone ranges (reference written
    here: the map is fitted on the clean side, then must give the degraded side). Clean pairs and everything
    drawn before the tone are as without it; pair_tone_share=0 draws nothing: the samples of before."""
    from dwgn.data.transforms import TONE_CONTRAST, TONE_GAIN, TONE_SHIFT

    path = img(tmp_path / "a.png", 90, 100, seed=7)
    kw = dict(crop=48, length=30, clean_share=0.3, weathers=("haze", "snow"))
    toned = SyntheticWeatherDataset([path], pair_tone_share=1.0, **kw)
    plain = SyntheticWeatherDataset([path], **kw)
    n_weather = 0
    for i in range(30):
        (d1, j1), (d0, j0) = toned[(i, i)], plain[(i, i)]
        if torch.equal(d0, j0):  # a clean pair: untouched
            assert torch.equal(d1, d0) and torch.equal(j1, j0)
            continue
        n_weather += 1
        d0, j0, d1, j1 = (t.permute(1, 2, 0).double().numpy() for t in (d0, j0, d1, j1))
        m = j0.mean()
        for ch in range(3):
            ok = (j1[..., ch] > 1e-3) & (j1[..., ch] < 1 - 1e-3)  # unclipped pixels of the clean side
            slope, icpt = np.polyfit(j0[..., ch][ok] - m, j1[..., ch][ok], 1)  # = c g, (m + s) g
            # c g and (m + s) g with g in TONE_GAIN: c and m + s lie within their ranges scaled by the gains
            assert TONE_CONTRAST[0] * TONE_GAIN[0] - 1e-4 <= slope <= TONE_CONTRAST[1] * TONE_GAIN[1] + 1e-4
            assert (m + TONE_SHIFT[0]) * TONE_GAIN[0] - 1e-4 <= icpt <= (m + TONE_SHIFT[1]) * TONE_GAIN[1] + 1e-4
            np.testing.assert_allclose(d1[..., ch], np.clip((d0[..., ch] - m) * slope + icpt, 0, 1), atol=2e-5)
    assert n_weather >= 12
    off = SyntheticWeatherDataset([path], pair_tone_share=0.0, **kw)
    for i in range(10):
        assert all(torch.equal(a, b) for a, b in zip(plain[(i, i)], off[(i, i)]))
    with pytest.raises(ValueError) as info:
        SyntheticWeatherDataset([path], pair_tone_share=1.5)
    assert_mentions(str(info.value), "pair_tone_share", "[0, 1]", "1.5")


def test_weather_side_makes_the_weather_on_a_larger_square_then_cuts_the_crop(tmp_path, assert_mentions):
    """weather_side=64, crop=24: the sample is a 64 px square (corner, dihedral), the weather synthesised on the
    whole square, then one 24 px window of the degraded square and the same window of the clean one (reference
    written here from those steps and the sample's own draws); clean pairs are cut from the square too. Raindrops
    made on the square keep the square's drop sizes, so they cover more of a crop than drops made on the crop.
    weather_side equal to the crop (or None) gives the samples of before; a smaller one is refused."""
    from dwgn.data.weather import synthesize

    path = img(tmp_path / "a.png", 90, 100, seed=6)
    photo = np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255.0
    ds = SyntheticWeatherDataset([path], crop=24, length=20, clean_share=0.3, weather_side=64)
    n_clean = 0
    for i in range(20):
        rng = np.random.default_rng(i)
        top, left, k = rng.integers(0, 90 - 64 + 1), rng.integers(0, 100 - 64 + 1), rng.integers(0, 8)
        square = dihedral(photo[top:top + 64, left:left + 64], int(k))
        if rng.random() < 0.3:  # clean -> clean: a window of the square
            y, x = rng.integers(0, 64 - 24 + 1), rng.integers(0, 64 - 24 + 1)
            expected_in = expected_out = square[y:y + 24, x:x + 24]
            n_clean += 1
        else:
            weather = ("snow", "rainfog", "raindrop", "rain", "haze")[int(rng.integers(0, 5))]
            degraded = synthesize(square, weather, rng)
            y, x = rng.integers(0, 64 - 24 + 1), rng.integers(0, 64 - 24 + 1)
            expected_in, expected_out = degraded[y:y + 24, x:x + 24], square[y:y + 24, x:x + 24]
        got_in, got_out = ds[(i, i)]
        np.testing.assert_allclose(got_out.permute(1, 2, 0).numpy(), expected_out, atol=1e-6)
        np.testing.assert_allclose(got_in.permute(1, 2, 0).numpy(), expected_in, atol=1e-6)
    assert 0 < n_clean < 20

    big = img(tmp_path / "big.png", 300, 300, seed=7)
    covered = {}
    for side in (None, 256):
        drops = SyntheticWeatherDataset([big], crop=128, length=40, weights=(0, 0, 1, 0, 0), weather_side=side)
        covered[side] = np.mean([float(((a - b).abs().amax(0) > 0.03).float().mean())
                                 for a, b in (drops[(i, i)] for i in range(40))])
    assert covered[256] > 1.4 * covered[None]

    same = SyntheticWeatherDataset([path], crop=24, length=10, clean_share=0.3, weather_side=24)
    plain = SyntheticWeatherDataset([path], crop=24, length=10, clean_share=0.3)
    for i in range(10):
        assert all(torch.equal(a, b) for a, b in zip(same[(i, i)], plain[(i, i)]))
    with pytest.raises(ValueError) as info:
        SyntheticWeatherDataset([path], crop=24, weather_side=16)
    assert_mentions(str(info.value), "weather_side", "24", "16")


def test_synthetic_weather_weights_set_the_share_of_each_weather(tmp_path, monkeypatch, assert_mentions):
    """Weights (3, 0, 1, 0, 0) over snow, rainfog, raindrop, rain, haze: about 3/4 snow, 1/4 raindrop, nothing
    else; uniform (no weights) keeps the draws of before (one rng.integers per sample)."""
    import dwgn.data.datasets as datasets
    from dwgn.data.weather import WEATHERS

    drawn: list[str] = []
    monkeypatch.setattr(datasets, "synthesize", lambda crop, weather, rng: drawn.append(weather) or crop)
    p = [img(tmp_path / "a.png", 60, 60, seed=4)]
    weighted = SyntheticWeatherDataset(p, crop=16, length=2000, weights=(3, 0, 1, 0, 0))
    for i in range(2000):
        weighted[(i, i)]
    assert set(drawn) == {"snow", "raindrop"} and 0.72 < drawn.count("snow") / 2000 < 0.78
    drawn.clear()
    uniform = SyntheticWeatherDataset(p, crop=16, length=300)
    for i in range(300):
        uniform[(i, i)]
    expected = []
    for i in range(300):  # the sample's own draws, in order: crop corner, dihedral, weather
        rng = np.random.default_rng(i)
        rng.integers(0, 60 - 16 + 1), rng.integers(0, 60 - 16 + 1), rng.integers(0, 8)
        expected.append(WEATHERS[int(rng.integers(0, len(WEATHERS)))])
    assert drawn == expected
    for bad, parts in [((1, 1), ["2", "snow, rainfog, raindrop, rain, haze"]),
                       ((1, -1, 1, 1, 1), ["(1, -1, 1, 1, 1)", ">= 0"]),
                       ((0, 0, 0, 0, 0), ["(0, 0, 0, 0, 0)", "not all 0"])]:
        with pytest.raises(ValueError) as info:
            SyntheticWeatherDataset(p, weights=bad)
        assert_mentions(str(info.value), "weather weights", *parts)


def test_online_weather_training_set(tmp_path, capsys, assert_mentions):
    """`synth.online` trains on SyntheticWeatherDataset over the clean photos under --data, each other `synth.*`
    key handed to it and announced in the log; a bad value is refused by validate(), naming its --synth.* flag."""
    from dwgn.errors import DataError
    from dwgn.training.config import ConfigError, FinetuneConfig, SynthConfig
    from dwgn.training.finetuning import ONLINE_SAMPLES_PER_PHOTO, online_training_set

    def online(crop: int = 32, **synth) -> FinetuneConfig:
        return FinetuneConfig(data=str(tmp_path / "photos"), crop=crop, synth=SynthConfig(online=True, **synth))

    for name in ("a.png", "b.png"):
        img(tmp_path / "photos" / name, 90, 100, seed=len(name))
    ds = online_training_set(online(clean_share=0.25))
    assert len(ds) == 2 * ONLINE_SAMPLES_PER_PHOTO and ds.clean_share == 0.25
    assert ds[(5, 5)][0].shape == (3, 32, 32)
    assert "SYNTHETIC weather made on the fly from 2 clean photos" in capsys.readouterr().out
    with pytest.raises(DataError) as info:
        online_training_set(FinetuneConfig(data=str(tmp_path / "photos" / "a.png"), synth=SynthConfig(online=True)))
    assert_mentions(str(info.value), "--synth.online", "--data", str(tmp_path / "photos" / "a.png"))
    with pytest.raises(ConfigError) as info:
        online(crop=64, clean_share=-0.1).validate()
    assert_mentions(str(info.value), "synth.clean_share", "-0.1", "--synth.clean-share")
    ds = online_training_set(online(weather_weights=(2, 1, 2, 1, 0)))
    assert np.allclose(ds.cumulative, [1 / 3, 1 / 2, 5 / 6, 1, 1])
    assert "weathers snow 33%, rainfog 17%, raindrop 33%, rain 17%, haze 0%" in capsys.readouterr().out
    with pytest.raises(ConfigError) as info:
        online(crop=64, weather_weights=(1, 1, 1, 1, -1)).validate()
    assert_mentions(str(info.value), "synth.weather_weights", "(1, 1, 1, 1, -1)", "--synth.weather-weights 2,1,2,1,1")
    ds = online_training_set(online(tone_share=0.4))
    assert ds.tone_share == 0.4 and "40% of crops toned first" in capsys.readouterr().out
    with pytest.raises(ConfigError) as info:
        online(crop=64, tone_share=-0.5).validate()
    assert_mentions(str(info.value), "synth.tone_share", "-0.5", "--synth.tone-share")
    ds = online_training_set(online(pair_tone_share=0.3))
    assert ds.pair_tone_share == 0.3 and "30% of weather pairs toned after the weather" in capsys.readouterr().out
    with pytest.raises(ConfigError) as info:
        online(crop=64, pair_tone_share=2.0).validate()
    assert_mentions(str(info.value), "synth.pair_tone_share", "2.0", "--synth.pair-tone-share")
    ds = online_training_set(online(weather_side=80))
    assert ds.weather_side == 80 and "weather made on 80² squares" in capsys.readouterr().out
    with pytest.raises(ConfigError) as info:
        online(crop=64, weather_side=16).validate()
    assert_mentions(str(info.value), "synth.weather_side", "64", "16", "--synth.weather-side")
    ds = online_training_set(online(clean_share=0.3, clean_crop=64))
    assert ds.clean_crop == 64 and "30% of steps clean -> clean 64² pairs" in capsys.readouterr().out
    with pytest.raises(ConfigError) as info:
        online(crop=64, clean_crop=0).validate()
    assert_mentions(str(info.value), "synth.clean_crop", "0", "--synth.clean-crop")
