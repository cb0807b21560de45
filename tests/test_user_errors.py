"""A new user's mistakes, command by command: one `error:` line on stderr, exit status 2, the value or file named
with the fix, and nothing named as an output that was not written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dwgn


def _photo(path: Path, h: int = 40, w: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _one_error_line(err: str, prog: str = "test.py") -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


def _last_error_line(err: str, prog: str = "test.py") -> str:
    """After work (progress lines on stderr): one error line, the last."""
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: ") and err.rstrip().endswith(errors[0]), err
    return errors[0]


# ---------------------------------------------------------------- test.py --input
def test_a_folder_without_photos_is_one_line_naming_it_and_what_is_looked_for(tmp_path, checkpoint, capsys, run_cli):
    from dwgn.evaluation.evaluate import PHOTO_EXTENSIONS, main

    empty, hidden = tmp_path / "empty", tmp_path / "hidden"
    empty.mkdir(), hidden.mkdir()
    (hidden / ".jpg").write_text("a text file named .jpg")
    (hidden / "notes.txt").write_text("not a photo")
    for folder in (empty, hidden):
        assert run_cli(main, ["--checkpoint", checkpoint, "--input", folder, "--results", tmp_path / "r"],
                       "test.py") == 2
        out, err = capsys.readouterr()
        line = _one_error_line(err)
        assert str(folder) in line and all(ext in line for ext in PHOTO_EXTENSIONS) and "hidden" in line
        assert out == ""  # no "restored 0 photo(s) into ..."
    assert "notes.txt" in line
    assert not (tmp_path / "r").exists()


def test_unreadable_photos_are_refused_before_anything_is_restored(tmp_path, checkpoint, capsys, run_cli):
    from dwgn.evaluation.evaluate import main

    folder = tmp_path / "photos"
    _photo(folder / "good.png")
    (folder / "text.jpg").write_text("a text file, not a JPEG")
    (folder / "empty.png").write_bytes(b"")
    assert run_cli(main, ["--checkpoint", checkpoint, "--input", folder, "--results", tmp_path / "r"], "test.py") == 2
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert "text.jpg" in line and "empty.png" in line and "good.png" not in line and "nothing was restored" in line
    assert out == "" and not (tmp_path / "r").exists()


def test_a_photo_that_fails_to_decode_is_named_and_the_others_restored(tmp_path, checkpoint, capsys, run_cli):
    """The header reads, the pixels do not (a truncated PNG): the rest is restored, the run exits 2 naming it."""
    from dwgn.evaluation.evaluate import main

    folder = tmp_path / "photos"
    _photo(folder / "good.png")
    whole = _photo(tmp_path / "whole.png", 64, 64, seed=1).read_bytes()
    (folder / "cut.png").write_bytes(whole[:len(whole) // 2])
    assert run_cli(main, ["--checkpoint", checkpoint, "--input", folder, "--results", tmp_path / "r"], "test.py") == 2
    out, err = capsys.readouterr()
    line = _last_error_line(err)
    assert "cut.png" in line and str(tmp_path / "r" / "photos") in line
    assert sorted(p.name for p in (tmp_path / "r" / "photos").iterdir()) == ["good.png"]
    assert "restored 1 photo(s) into" in out
    (folder / "good.png").unlink()  # the cut one alone: nothing restored, no output folder named
    assert run_cli(main, ["--checkpoint", checkpoint, "--input", folder, "--results", tmp_path / "r2"], "test.py") == 2
    out, err = capsys.readouterr()
    assert "cut.png" in _last_error_line(err) and "nothing was restored" in err and "restored" not in out


# ---------------------------------------------------------------- test.py numbers
@pytest.mark.parametrize("argv, named", [
    (["--tile", "-5"], "--tile -5"),
    (["--overlap", "-1"], "--overlap -1"),
    (["--tile", "128", "--overlap", "128"], "--overlap 128"),
    (["--overlap", "512"], "--overlap 512"),  # the default tiles are 512 px
    (["--crop-border", "-2"], "--crop-border -2"),
    (["--profile-sizes", "0", "256"], "--profile-sizes 0"),
])
def test_nonsense_numbers_are_refused_before_work(tmp_path, capsys, argv, named):
    from dwgn.evaluation.evaluate import main

    _photo(tmp_path / "photos" / "a.png")
    with pytest.raises(SystemExit) as done:  # a missing checkpoint: refused before it is even looked for
        main(argv + ["--checkpoint", str(tmp_path / "missing.pt"), "--input", str(tmp_path / "photos"),
                     "--results", str(tmp_path / "r")])
    line = _one_error_line(capsys.readouterr().err, "python test.py")
    assert done.value.code == 2 and named in line and ("e.g." in line or "give" in line)
    assert not (tmp_path / "r").exists()


def test_test_py_help_says_what_tile_values_mean_and_the_unreadable_photo_policy(capsys):
    from dwgn.evaluation.evaluate import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0: never tile" in text and "N > 0: N x N tiles" in text and "negative values are refused" in text
    assert "refused before anything is restored" in text and "exit status 2" in text


# ---------------------------------------------------------------- train.py / pre-training.py
REPO = Path(__file__).resolve().parents[1]


def test_a_crop_the_network_would_pad_is_refused_naming_the_nearest_valid_ones(run_cli, capsys):
    from dwgn.models.network import PRESETS
    from dwgn.training.config import ConfigError, FinetuneConfig
    from dwgn.training.finetuning import main

    for preset in PRESETS:
        multiple = dwgn.build_model(preset).multiple
        FinetuneConfig(preset=preset, model=PRESETS[preset], crop=2 * multiple).validate()
        with pytest.raises(ConfigError) as refused:
            FinetuneConfig(preset=preset, model=PRESETS[preset], crop=multiple + 8).validate()
        assert f"crop {multiple + 8}" in str(refused.value) and f"--crop {multiple} or {2 * multiple}" in str(refused.value)
    assert run_cli(main, ["--crop", "10"], "train.py") == 2
    line = _one_error_line(capsys.readouterr().err, "train.py")
    assert "crop 10" in line and "--crop 64" in line


def test_the_shipped_configs_have_valid_crops():
    from dwgn.training.config import FinetuneConfig
    from dwgn.training.cli import parse_config
    from dwgn.training.pretraining import PretrainingConfig

    files = sorted((REPO / "configs").glob("*.yaml")) + [REPO / "checkpoints" / "dwgn-small-demo.yaml"]
    crops = {parse_config(PretrainingConfig if "pretrain" in f.name else FinetuneConfig, ["--config", str(f)]).crop
             for f in files}
    assert crops == {64, 128, 256}


class _Pairs(torch.utils.data.Dataset):
    """Noisy copies of fixed random images, a fresh noise per sample seed."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        index, seed = item[:2] if isinstance(item, tuple) else (item, item)
        clean = torch.from_numpy(np.random.default_rng(index).random((3, 64, 64), dtype=np.float32))
        noise = torch.from_numpy(np.random.default_rng(seed + 100).standard_normal((3, 64, 64), dtype=np.float32))
        return (clean + 0.1 * noise).clamp(0, 1), clean


def _train(tmp_path: Path, **kw):
    import json

    from dwgn.training.config import FinetuneConfig
    from dwgn.training.engine import Stage, train

    cfg = FinetuneConfig(**{**dict(steps=4, batch_size=1, crop=64, num_workers=0, log_every=1, save_every=4,
                                   val_every=0, device="cpu", out=str(tmp_path / "run"), from_scratch=True), **kw})
    torch.manual_seed(0)
    result = train(cfg, Stage("finetune", dwgn.build_model("tiny"), _Pairs(4), _Pairs(2)))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    return result, log


def test_val_every_0_validates_only_at_the_end(tmp_path, capsys):
    _, log = _train(tmp_path, val_every=0)
    assert [x["step"] for x in log if "val_psnr" in x] == [4]  # no step-0 validation either
    assert "step 0: validation" not in capsys.readouterr().out
    _, log = _train(tmp_path / "every2", val_every=2)
    assert [x["step"] for x in log if "val_psnr" in x] == [0, 2, 4]


def test_the_closing_last_loss_is_the_last_logged_loss(tmp_path, capsys):
    result, log = _train(tmp_path, log_every=4)  # one log line: the mean of 4 steps' losses
    logged = [x for x in log if "loss" in x]
    assert [x["step"] for x in logged] == [4] and result.last_loss == logged[-1]["loss"]
    assert f"last loss {logged[-1]['loss']:.4f}" in capsys.readouterr().out


def _bad_folder(folder: Path, good: int = 2) -> Path:
    for i in range(good):
        _photo(folder / f"p{i}.png", 80, 80, seed=i)
    (folder / "junk.png").write_text("a text file named .png")
    return folder / "junk.png"


def test_unreadable_training_images_are_refused_before_step_1(tmp_path, run_cli, capsys):
    from dwgn.training.finetuning import main as train_main
    from dwgn.training.pretraining import main as pretrain_main

    data = tmp_path / "pairs"
    for i in range(3):
        _photo(data / "input" / f"{i}.png", 80, 80, seed=i)
        _photo(data / "gt" / f"{i}.png", 80, 80, seed=i)
    (data / "input" / "1.png").write_bytes(b"")
    bad_photo = _bad_folder(tmp_path / "photos")
    runs = tmp_path / "runs"
    for main, prog, argv, bad in (
            (train_main, "train.py", ["--data", data, "--val-data", "none"], data / "input" / "1.png"),
            (train_main, "train.py", ["--data", tmp_path / "photos", "--synth.online"], bad_photo),
            (pretrain_main, "pre-training.py", ["--data", tmp_path / "photos"], bad_photo)):
        argv += ["--from-scratch"] if prog == "train.py" else []
        assert run_cli(main, argv + ["--out", runs / "r", "--device", "cpu", "--num-workers", "0"], prog) == 2
        line = _one_error_line(capsys.readouterr().err, prog)
        assert str(bad) in line and "replace or remove" in line, line
    assert not runs.exists()  # refused before the run directory was made
