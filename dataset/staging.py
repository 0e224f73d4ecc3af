"""Hidden staging folders beside an output, named after the process that owns them, and removal of stale ones.

A tool that must never show a partial output writes it into a staging folder beside the target and renames that
folder into place at the end. A run killed midway (SIGKILL, power loss) cannot clean up, so its staging folder
stays. The folder's name says who made it:

    .<target name>.<host>-pid<pid>.<random>.tmp     e.g. OUT/.train.myhost-pid4242.k3j9x_2a.tmp

`remove_stale(target)`, called by a tool before it starts writing `target`, removes the staging folders (and
files) of `target` whose process has ended on this host; those of a live process (a concurrent run into the same
output folder) and those of other hosts are left alone. Staging names without an owner (`.<target name>.<random>.tmp`,
as earlier versions made them) are removed only once nothing in them changed for STALE_UNOWNED_S seconds, since
their owner cannot be asked.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

STALE_UNOWNED_S = 6 * 3600  # an unowned staging folder untouched this long is taken as left by a killed run
_RANDOM = r"[A-Za-z0-9_]+"  # tempfile's random part


def host_tag() -> str:
    """This machine's name as it goes into staging names (letters, digits and '-' only)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def make_staging_dir(target: str | Path) -> Path:
    """Create and return a fresh, empty hidden staging folder beside `target` (creating its parent folders).

    The folder gets the usual permissions (0777 less the umask), so that it can be renamed into place as is.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{host_tag()}-pid{os.getpid()}.", suffix=".tmp",
                                 dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # mkdtemp makes 0700
    return path


class Leftover(NamedTuple):
    path: Path
    host: Optional[str]  # None: an unowned (older) name
    pid: Optional[int]


def find_leftovers(target: str | Path) -> list:
    """The staging folders and files of `target` (owned or not) that lie beside it, sorted by name."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    name = re.escape(target.name)
    owned = re.compile(rf"\.{name}\.(?P<host>[A-Za-z0-9-]+)-pid(?P<pid>[0-9]+)\.{_RANDOM}\.tmp")
    unowned = re.compile(rf"\.{name}\.{_RANDOM}\.tmp")
    found = []
    for entry in sorted(target.parent.iterdir()):
        match = owned.fullmatch(entry.name)
        if match:
            found.append(Leftover(entry, match["host"], int(match["pid"])))
        elif unowned.fullmatch(entry.name):
            found.append(Leftover(entry, None, None))
    return found


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_change(path: Path) -> float:
    """The newest modification time of `path` and of everything below it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, folders, files in os.walk(path):
            for entry in folders + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, entry)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def remove_stale(target: str | Path, say: Callable[[str], None], now: Optional[float] = None) -> list:
    """Remove the staging leftovers of `target` that no running process owns; returns the removed paths.

    `say` gets one line per leftover: what was removed and why, or why one was kept.
    """
    now = time.time() if now is None else now
    here = host_tag()
    removed = []
    for leftover in find_leftovers(target):
        path = leftover.path
        try:
            if leftover.pid is not None:
                if leftover.host != here:
                    say(f"kept {path}: made on host '{leftover.host}', whose processes cannot be checked from here")
                    continue
                if leftover.pid == os.getpid() or process_alive(leftover.pid):
                    say(f"kept {path}: process {leftover.pid} that writes it is still running")
                    continue
                why = f"its process {leftover.pid} has ended"
            else:
                idle = now - last_change(path)
                if idle < STALE_UNOWNED_S:
                    say(f"kept {path}: it changed {idle / 60:.0f} min ago and names no owner, so it may belong to a "
                        f"run still going; delete it by hand if none is")
                    continue
                why = f"unchanged for {idle / 3600:.1f} h"
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # removed meanwhile (by its owner, or by a concurrent cleanup)
            continue
        except OSError as error:  # e.g. no permission: the run itself does not need it gone
            say(f"could not remove {path}: {error}")
            continue
        say(f"removed {path}, left by an interrupted run ({why})")
        removed.append(path)
    return removed
