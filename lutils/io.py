"""File writing: atomic writes (a crash never leaves a half-written file under the final name), and the one JSON
convention of the project (json_safe: standard JSON, non-finite numbers as null)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Optional


def temporary_path_for(path: str | Path) -> Path:
    """A fresh hidden temporary name in the destination folder (same filesystem, so rename is atomic).

    The name ends in `.tmp`, so globs for the final suffix (e.g. `*.hdf5`) never match it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; final files should get the usual permissions
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    tmp = temporary_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def json_safe(value: Any) -> Any:
    """`value` as standard JSON data, the one convention of every JSON file the project writes.

    Mappings become dicts with string keys, tuples become lists, numpy and torch scalars and arrays become Python
    numbers and lists, and NaN or infinite floats become None (null). JSON (RFC 8259) has no NaN or Infinity: Python's
    bare `NaN` is refused by strict parsers (JavaScript's JSON.parse, jq, `json.loads(..., parse_constant=...)`), and
    a string such as "nan" would turn a numeric field into a string field. null is the standard "no number": it keeps
    each field a number or nothing. What null stood for (NaN, +inf or -inf) is not kept; a reader that needs a float
    reads it as NaN (as `lutils.logger.read_metrics` does).
    """
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors (a 0-d one gives a Python number)
        if hasattr(value, "detach"):
            value = value.detach().cpu()
        return json_safe(value.tolist())
    return value


def dumps_json(value: Any, indent: Optional[int] = 2) -> str:
    """Strict JSON text of `json_safe(value)` (allow_nan=False: a non-finite number that got through is an error)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def write_json(path: str | Path, value: Any, indent: Optional[int] = 2, sort_keys: bool = False) -> Path:
    """Write `value` as strict JSON (see json_safe) with a final newline, atomically."""
    text = json.dumps(json_safe(value), indent=indent, allow_nan=False, sort_keys=sort_keys)
    return atomic_write_text(path, text + "\n")
