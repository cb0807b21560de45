import torch

# One intra-op thread: the tests' tensors are small, and on a shared 2-core machine OpenMP threads that
# wait for each other made the suite tens of times slower. Results do not depend on it.
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture
def run_cli():
    """Run a command's `main` the way its script does (dwgn.errors.run_main) and return the exit status."""
    from dwgn.errors import run_main

    def run(main, argv, prog="cmd"):
        with pytest.raises(SystemExit) as exit_info:
            run_main(main, prog, [str(a) for a in argv])
        return exit_info.value.code

    return run
