"""Temporary files of a training run that say who wrote them, and removal of the stale ones.

Every file a run writes goes through :class:`OwnedAtomicPath`: the atomic write of
:class:`cerberus_cli.core.atomic.AtomicPath` with a temporary name that carries the
writer's host and pid, ``.<name>~<host>~<pid>~<random>.partial[<ext>]``. A run killed
mid-write leaves such a file behind; the next run in that folder removes it when its
owner is gone (:func:`remove_stale`). A temporary file of a live process, or of a
process on another host (whose liveness cannot be checked from here), is left alone.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import CerberusError
from cerberus_cli.core.processes import host, pid_alive

log = logging.getLogger(__name__)

_OWNED = re.compile(r"^\.(?P<name>.+)~(?P<host>[^~/]+)~(?P<pid>\d+)~[0-9a-f]{8}\.partial(\.\w+)?$")
# Written by earlier versions: ".<name>.tmp-<pid>" (and ".last.state.pt.tmp", no pid).
_LEGACY = re.compile(r"^\.(?P<name>.+)\.tmp(-(?P<pid>\d+))?$")


def _host() -> str:
    # "~" separates the fields of a temporary name; host names never hold one.
    return host().replace("~", "-")


class OwnedAtomicPath(AtomicPath):
    """:class:`AtomicPath` whose temporary name carries this host and pid.

    ``keep_suffix`` appends the final name's extension to the temporary name, for
    writers that choose the file format by extension (image encoders).
    """

    def __init__(self, path: str | os.PathLike, keep_suffix: bool = False) -> None:
        super().__init__(path, overwrite=True)
        suffix = self.path.suffix if keep_suffix else ""
        self.tmp = self.path.with_name(
            f".{self.path.name}~{_host()}~{os.getpid()}~{secrets.token_hex(4)}.partial{suffix}")

    def commit(self) -> Path:
        """Rename the complete temporary file to its final name, durably.

        The temporary file is flushed to disk first and the folder after the rename,
        so a power cut leaves the old file or the new one, never an empty one.
        """
        _fsync(self.tmp)
        path = super().commit()
        _fsync(path.parent)
        return path


def write_file(path: str | os.PathLike, write: Callable[[Path], object], keep_suffix: bool = False) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills an owned temporary file, then it is
    renamed into place. Any failure removes the temporary file.

    Raises:
        CerberusError: the file cannot be written (disk full, read-only, no permission),
            naming it.
    """
    atomic = OwnedAtomicPath(path, keep_suffix=keep_suffix)
    try:
        write(atomic.tmp)
        return atomic.commit()
    except OSError as exc:
        atomic.abort()
        raise CerberusError(f"{atomic.path}: cannot be written: {exc.strerror or exc}") from None
    except BaseException:
        atomic.abort()
        raise


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # nothing to flush (or a file system without directory handles)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def stale_owner(name: str) -> str | None:
    """Why the temporary file ``name`` is stale ("pid 12 on host x is gone"), or ``None``
    when it is not a run's temporary file or its owner may still be writing it."""
    m = _OWNED.match(name)
    if m:
        pid = int(m["pid"])
        if m["host"] != _host() or pid == os.getpid() or pid_alive(pid):
            return None
        return f"pid {pid} on {m['host']} is gone"
    m = _LEGACY.match(name)
    if m:
        # Earlier versions named no host: such a file is stale once no process of
        # that pid runs here (a run has a folder to itself).
        legacy_pid = int(m["pid"]) if m["pid"] else None
        if legacy_pid is not None and (legacy_pid == os.getpid() or pid_alive(legacy_pid)):
            return None
        return f"left by an earlier version (pid {legacy_pid})" if legacy_pid else "left by an earlier version"
    return None


def remove_stale(*folders: Path) -> list[Path]:
    """Remove the temporary files in ``folders`` whose writer is gone; return them."""
    removed: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            why = stale_owner(entry.name)
            if why is None or not entry.is_file():
                continue
            try:
                entry.unlink()
            except FileNotFoundError:
                continue  # removed meanwhile
            log.info("removed %s (a temporary file; %s)", entry, why)
            removed.append(entry)
    return removed
