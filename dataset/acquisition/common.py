"""What the acquisition tools share: one-line errors, output folders that appear only when complete.

Exit statuses (lutils.errors): 2 for a bad command line, 1 for bad input or output (a project error, or an OSError
such as a full disk or a missing permission, which names its path), 130 for Ctrl-C. Any other exception is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from dataset.staging import make_staging_dir, remove_stale
from lutils.errors import EXIT_INTERRUPTED, EXIT_USAGE, CageError, report


class AcquisitionError(CageError, RuntimeError):
    """Bad input or output for an acquisition tool; the message names the path (and row) at fault."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `error: ...` line on stderr (with a pointer to --help), exit status 2."""

    @classmethod
    def for_module(cls, module: str, doc: str) -> "Parser":
        """The parser of `python -m <module>`: the docstring's first paragraph as description, the rest as epilog."""
        return cls(prog=f"python -m {module}", description=doc.split("\n\n")[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc.split("\n\n", 1)[1])

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def check_output_folder(output: Path, force: bool, inputs: dict, flag: str, allow_inside_input: bool = False) -> None:
    """Refuse an output that is a file, that is non-empty without --force, or that would swallow an input.

    inputs: {flag: path} of the tool's input folders. The output may never be an input or contain one (--force would
    delete it); unless allow_inside_input, it may not lie inside one either.
    """
    if output.exists() and not output.is_dir():
        raise AcquisitionError(f"{flag} exists and is not a folder: {output}")
    resolved = output.resolve()
    for input_flag, path in inputs.items():
        source = Path(path).resolve()
        if resolved == source or resolved in source.parents:
            raise AcquisitionError(f"{flag} {output} is or contains {input_flag} {path}; choose another output folder")
        if not allow_inside_input and source in resolved.parents:
            raise AcquisitionError(f"{flag} {output} lies inside {input_flag} {path}; choose a folder outside it")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise AcquisitionError(f"{flag} is not empty: {output} (use --force to replace it)")


class StagedFolder:
    """A hidden staging folder beside `target`; `commit()` puts it in place of `target`, `abort()` deletes it.

    Until commit nothing named `target` is created or changed, so a failed or interrupted run leaves an existing
    target as it was and no partial one. First the staging folders of earlier runs of `target` that were killed
    (so could not delete theirs) are removed, each with a note (dataset.staging.remove_stale).
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        remove_stale(self.target, note)
        self.path = make_staging_dir(self.target)  # creates the parent folders
        self._done = False

    def commit(self) -> Path:
        old: Optional[Path] = None
        if self.target.exists() and any(self.target.iterdir()):
            old = make_staging_dir(self.target)  # an empty folder, replaced by the previous target
            os.replace(self.target, old)
        os.replace(self.path, self.target)  # an empty folder there is replaced as well
        self._done = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def abort(self) -> None:
        if not self._done:
            shutil.rmtree(self.path, ignore_errors=True)
            self._done = True

    def __enter__(self) -> "StagedFolder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()  # after commit() a no-op; on any error or interrupt the staged folder goes


def run_tool(body: Callable[[], None], output: str) -> int:
    """Run a tool's work: bad input is one `error: ...` line and exit status 1, Ctrl-C exit status 130."""
    try:
        body()
    except (CageError, OSError) as error:
        return report(error)
    except KeyboardInterrupt:
        print(f"interrupted: nothing was written to {output}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
