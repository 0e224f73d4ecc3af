"""The project's base error class and the exit statuses of its command-line tools.

Every error class of the project derives from `CageError` and keeps its older base (ValueError, RuntimeError,
FileNotFoundError, ...), so code that catches the older base goes on working. A CLI catches `CageError` (and
only the few outside errors that are plainly the user's, such as a missing file), prints `error: <message>` and
exits with EXIT_FAILURE; every other exception is a bug and propagates with its traceback. A bad command line
(an unknown flag, a value out of range) exits with EXIT_USAGE through argparse's `parser.error`.
"""
from __future__ import annotations

import sys

EXIT_FAILURE = 1  # the tool ran and failed: bad input data, config, checkpoint, output folder
EXIT_USAGE = 2  # the command line itself is wrong (argparse's status)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class CageError(Exception):
    """The project's expected, user-facing errors: bad input, config, data, checkpoint or output, named in the
    message. CLIs print them without traceback and exit 1."""


def report(error: BaseException) -> int:
    """Print `error: <message>` on stderr (one line for a one-line message, no traceback); returns EXIT_FAILURE."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_FAILURE
