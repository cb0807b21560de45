from pathlib import Path

import pytest
import torch

from dwgn.data.demo import build_demo

# One intra-op thread: the tests' tensors are small, and on a shared 2-core machine OpenMP threads that
# wait for each other made the suite tens of times slower. Results do not depend on it.
torch.set_num_threads(1)

# The small demo set every test that needs one shares (built once per session; tests must not modify it):
# the full demo's layouts and weathers with 1 training pair and 2 test pairs per weather.
SMALL_DEMO = dict(seed=0, train_per_weather=1, test_per_weather=2)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo(tmp_path_factory.mktemp("shared") / "demo", **SMALL_DEMO)


def mentions(text: str, *parts: str) -> None:
    """Every part (a key, a value, a path, a fix) appears in the message; its wording around them is free."""
    missing = [p for p in parts if p not in text]
    assert not missing, f"message lacks {missing}: {text!r}"


@pytest.fixture
def assert_mentions():
    """`mentions` for the tests (they do not import conftest): assert_mentions(str(info.value), key, value, fix)."""
    return mentions


@pytest.fixture
def run_cli():
    """Run a command's `main` the way its script does (dwgn.errors.run_main) and return the exit status."""
    from dwgn.errors import run_main

    def run(main, argv, prog="cmd"):
        with pytest.raises(SystemExit) as exit_info:
            run_main(main, prog, [str(a) for a in argv])
        return exit_info.value.code

    return run


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """An untrained tiny network in the training checkpoint format."""
    from dataclasses import asdict

    import dwgn
    from dwgn.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = dwgn.build_model("tiny")
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, {"format_version": 1, "model": model.state_dict(),
                           "config": {"model": asdict(model.config)}, "step": 0})
    return path
