"""One error style for every command: a user's mistake is one `error:` line and exit code 2; a bug is a traceback.

Every entry point (train.py, pre-training.py, test.py, dataset/*.py, `python -m dwgn.*`) runs its `main`
through `run_main`, and those with argparse flags parse them with `ArgumentParser` (below). Errors a user can
fix derive from `UserError` (with the file or value and the fix in the message); a missing path
(FileNotFoundError and its kin) counts as one too. Anything else propagates: a traceback means a bug.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Sequence


class UserError(Exception):
    """A mistake the user can fix: the message names the file or value and what to do."""


class DataError(UserError, ValueError):
    """Data that cannot be used as given: unreadable image, empty set, two inputs with one output name."""


USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_main(main: Callable[[Sequence[str]], object], prog: str, argv: Sequence[str] | None = None) -> NoReturn:
    """Call `main(argv)` and exit with its status (an int; anything else, e.g. a result dict, is 0);
    user errors become `prog: error: ...` on stderr and exit 2; Ctrl-C exits 130 without a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        status = main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except USER_ERRORS as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for every command: a bad flag or value is one `prog: error: ... (see --help)` line on stderr and
    exit code 2, without argparse's usage block (`--help` still prints it)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {' '.join(message.split())} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def one_line(err: BaseException) -> str:
    """The message on one line (an OSError without a message is described by its type and file)."""
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    return " ".join(text.split())


__all__ = ["ArgumentParser", "DataError", "EXIT_USER_ERROR", "USER_ERRORS", "UserError", "run_main"]
