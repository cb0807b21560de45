"""Every entry point shares one error style: a user's mistake is one `error:` line and exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dwgn.errors import DataError, run_main

REPO = Path(__file__).resolve().parents[1]


def test_run_main_exit_codes_and_messages(capsys):
    def mistake(argv):
        raise DataError(f"image {argv[0]} is broken;\n re-download it")

    def missing(argv):
        open(argv[0])

    def bug(argv):
        raise KeyError("a bug")

    for main, argv, message in ((mistake, ["x.png"], "image x.png is broken; re-download it"),
                                (missing, ["/nonexistent/f"], "/nonexistent/f: No such file or directory")):
        with pytest.raises(SystemExit) as done:
            run_main(main, "prog", argv)
        assert done.value.code == 2
        assert capsys.readouterr().err == f"prog: error: {message}\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_main(bug, "prog", [])
    for status, code in ((None, 0), (3, 3), ({"a": 1}, 0)):
        with pytest.raises(SystemExit) as done:
            run_main(lambda argv: status, "prog", [])
        assert done.value.code == code


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # this checkout's dwgn
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # one interpreter per entry point (each imports torch)
def test_every_entry_point_turns_a_mistake_into_one_error_line(tmp_path):
    missing = str(tmp_path / "missing")
    commands = {  # prog: (arguments, what the one line must name)
        "train.py": ([str(REPO / "train.py"), "--steps", "1.5"], "--steps '1.5'"),
        "pre-training.py": ([str(REPO / "pre-training.py"), "--data", missing], f"{missing} does not exist"),
        "test.py": ([str(REPO / "test.py"), "--checkpoint", missing + ".pt", "--profile"], "missing.pt not found"),
        "dataset/prepare.py": ([str(REPO / "dataset" / "prepare.py"), "--check", missing], "does not exist"),
        "dataset/prepare_imagenet.py": ([str(REPO / "dataset" / "prepare_imagenet.py"), "--root", missing,
                                         "--out", str(tmp_path / "list.txt")], missing),
        "python -m dwgn.curves": (["-m", "dwgn.curves", missing], "missing/log.jsonl not found"),
        "python -m dwgn.export": (["-m", "dwgn.export", missing + ".pt", str(tmp_path / "out.pt")], "missing.pt"),
        "python -m dwgn.analysis": (["-m", "dwgn.analysis", "--checkpoint", missing + ".pt"], "missing.pt not found"),
        "python -m dwgn.convert": (["-m", "dwgn.convert", missing + ".pth", str(tmp_path / "c.pt")], "missing.pth"),
    }
    for prog, (args, named) in commands.items():
        done = _run(args, tmp_path)
        assert done.returncode == 2, (prog, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and named in lines[0], (prog, done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written by a refused command


ENTRY_POINTS = {  # module of each command's `main` (train.py and pre-training.py parse through dwgn.training.config)
    "python test.py": "dwgn.evaluation.evaluate",
    "python -m dwgn.evaluation.heldout": "dwgn.evaluation.heldout",
    "python -m dwgn.export": "dwgn.export",
    "python -m dwgn.app": "dwgn.app.__main__",
    "python dataset/prepare.py": "dwgn.data.prepare",
    "python dataset/prepare_imagenet.py": "dwgn.data.imagenet",
    "python dataset/fetch_photos.py": "dwgn.data.photo_sources",
    "python -m dwgn.profile": "dwgn.profile",
    "python -m dwgn.analysis": "dwgn.analysis.run",
    "python -m dwgn.curves": "dwgn.training.curves",
    "python -m dwgn.convert": "dwgn.convert",
    "python -m dwgn.evaluation.results_figure": "dwgn.evaluation.results_figure",
}


@pytest.mark.parametrize("prog", ENTRY_POINTS)
def test_a_bad_flag_is_one_error_line_without_the_usage_block(prog, capsys):
    import importlib

    main = importlib.import_module(ENTRY_POINTS[prog]).main
    for argv, named in ((["--no-such-flag"], "--no-such-flag"), (["--help"], None)):
        with pytest.raises(SystemExit) as done:
            main(argv)
        out, err = capsys.readouterr()
        if named is None:  # --help keeps argparse's full usage
            assert done.value.code == 0 and out.startswith(f"usage: {prog}")
            continue
        assert done.value.code == 2 and out == ""
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
        assert (named in lines[0] or "arguments are required" in lines[0]) and "see --help" in lines[0]


def test_train_and_pre_training_flags_are_one_error_line(run_cli, capsys):
    from dwgn.training.finetuning import main as train_main
    from dwgn.training.pretraining import main as pretrain_main

    for main, prog in ((train_main, "train.py"), (pretrain_main, "pre-training.py")):
        for argv, named in ((["--no-such-key", "1"], "no_such_key"), (["--steps", "x"], "'x'"),
                            (["--steps"], "--steps"), (["stray"], "stray")):
            assert run_cli(main, argv, prog) == 2
            out, err = capsys.readouterr()
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and named in lines[0], err
            assert lines[0].endswith("(see --help)"), err


def test_no_command_builds_a_plain_argparse_parser():
    """Every command's parser is dwgn.errors.ArgumentParser (one error line); a plain one would print its usage."""
    plain = [str(path.relative_to(REPO)) for path in sorted((REPO / "dwgn").rglob("*.py"))
             if "argparse.ArgumentParser(" in path.read_text()]
    assert plain == []
