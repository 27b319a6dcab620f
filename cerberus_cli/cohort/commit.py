"""The per-slide commit protocol: a slide's outputs are final only when its commit record
``OUT/S.run.json`` is valid and every file it lists has its recorded size.

Readers trust nothing else (:func:`read_commit`). A writer goes through one
:class:`SlideCommit`::

    slide = SlideCommit(out, stem)
    slide.recover()               # finish or drop a swap a dead run left (under the claim)
    staging = slide.begin()       # OUT/.S.staging.<host>.<pid>/, empty
    ...                           # every output built in staging under its final name
    slide.write_record(record)    # the commit record, last, in staging
    slide.commit()                # swap the staged set in: the record moves last
    slide.abort()                 # or: drop the staging folder, nothing else changes

:meth:`SlideCommit.commit` writes the journal ``OUT/.S.swap.json``, removes the old
record (the old set stops being committed), moves the new files in, removes old
files the new set lacks, moves the new record in last, then removes the staging
folder and the journal. At every instant ``OUT`` holds the old committed set or the
new one, or (during the moves) no committed set, never a mixed one. A run that dies
mid-swap leaves the journal; :meth:`SlideCommit.recover` finishes the swap from the
staging folder, whose record proves the new set whole. Staging folders of dead
processes on this host are removed by :func:`clean_stale`. The staging folder's name
is made (and read back) only by :func:`staging_name` and :func:`parse_staging_name`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.processes import host, pid_alive

log = logging.getLogger(__name__)

RECORD_FORMAT = "cerberus-cli/run-record"
RECORD_VERSION = 2
_STAGING = ".staging."
#: Age after which a partial file beside the outputs is a dead run's leftover.
_PARTIAL_AGE_S = 600.0


def record_path(folder: Path, stem: str) -> Path:
    """Where slide ``stem``'s commit record lives in ``folder``."""
    return folder / f"{stem}.run.json"


def staging_name(stem: str, holder_host: str | None = None, pid: int | None = None) -> str:
    """Name of a staging folder: hidden, with the host and pid of the process that owns it
    (by default this process)."""
    return f".{stem}{_STAGING}{holder_host or host()}.{os.getpid() if pid is None else pid}"


def parse_staging_name(name: str) -> tuple[str, str, int] | None:
    """``(stem, host, pid)`` of a staging folder's name, or None for any other name."""
    if not name.startswith("."):
        return None
    stem, sep, rest = name[1:].partition(_STAGING)
    holder_host, _, pid = rest.rpartition(".")
    if not sep or not stem or not holder_host or not pid.isdigit():
        return None
    return stem, holder_host, int(pid)


def _journal(folder: Path, stem: str) -> Path:
    return folder / f".{stem}.swap.json"


# --- reading and validating ----------------------------------------------------------------

def read_commit(folder: Path, stem: str) -> dict[str, Any] | None:
    """The slide's commit record when it is valid and every file it lists is whole, else None."""
    path = record_path(folder, stem)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or \
            record.get("format_version") != RECORD_VERSION:
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for name, digest in files.items():
        target = folder / name
        try:
            if not target.exists() or _size(target) != digest.get("size"):
                return None
        except OSError:
            return None
    return record


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# --- one slide's commit ------------------------------------------------------------------------

class SlideCommit:
    """The commit of slide ``stem`` into ``folder`` (see the module docstring for the steps)."""

    def __init__(self, folder: Path, stem: str) -> None:
        self.folder = Path(folder)
        self.stem = stem
        #: This process's staging folder, between :meth:`begin` and :meth:`commit` / :meth:`abort`.
        self.staging: Path | None = None

    @property
    def record_path(self) -> Path:
        """The committed record's path (in ``folder``)."""
        return record_path(self.folder, self.stem)

    def committed(self) -> dict[str, Any] | None:
        """The slide's valid commit record in ``folder``, or None."""
        return read_commit(self.folder, self.stem)

    @property
    def pending(self) -> bool:
        """True when a dead run left a swap of this slide unfinished (see :meth:`recover`)."""
        return _journal(self.folder, self.stem).exists()

    def begin(self) -> Path:
        """Create this process's staging folder, empty; every output is built there."""
        staging = self.folder / staging_name(self.stem)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        self.staging = staging
        return staging

    def write_record(self, record: dict[str, Any]) -> Path:
        """Write the commit record into staging (the last file written); returns its path."""
        target = record_path(self._staging(), self.stem)
        AtomicPath(target, overwrite=True).write_text(json.dumps(record, indent=2))
        return target

    def commit(self) -> None:
        """Swap the staged set into ``folder``: journal first, the record last."""
        staging = self._staging()
        new_record = json.loads(record_path(staging, self.stem).read_text())
        AtomicPath(_journal(self.folder, self.stem), overwrite=True).write_text(
            json.dumps({"staging": staging.name}))
        self._finish_swap(staging, new_record)
        self.staging = None

    def abort(self) -> None:
        """Drop what was staged (the staging folder); the committed set, if any, stands."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def recover(self) -> str | None:
        """Finish (or drop) a swap a dead run left behind; returns what was done, if anything."""
        journal = _journal(self.folder, self.stem)
        if not journal.exists():
            return None
        try:
            staging = self.folder / json.loads(journal.read_text())["staging"]
            new_record = json.loads(record_path(staging, self.stem).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            _remove(journal)  # the staged set never became whole: the old set (if any) stands
            return "dropped an unfinished swap"
        self._finish_swap(staging, new_record)
        return "finished an interrupted swap"

    def remove_staging(self, holder_host: str, pid: int) -> bool:
        """Remove the staging folder a dead process (``holder_host``, ``pid``) left; True if
        there was one."""
        staging = self.folder / staging_name(self.stem, holder_host, pid)
        if not staging.is_dir():
            return False
        shutil.rmtree(staging, ignore_errors=True)
        log.info("%s: removed %s left by a dead runner", self.stem, staging.name)
        return True

    def _staging(self) -> Path:
        if self.staging is None:
            raise RuntimeError(f"{self.stem}: nothing staged (begin() first)")
        return self.staging

    def _finish_swap(self, staging: Path, new_record: dict[str, Any]) -> None:
        old_path = self.record_path
        old_files: set[str] = set()
        try:
            old_files = set(json.loads(old_path.read_text()).get("files", {}))
        except (OSError, ValueError):
            pass
        if old_path.exists() and (staging / old_path.name).exists():
            old_path.unlink()  # from here the old set is no longer committed
        for name in new_record["files"]:
            if (staging / name).exists():
                _move(staging / name, self.folder / name)
        for name in old_files - set(new_record["files"]):
            _remove(self.folder / name)
        if (staging / old_path.name).exists():
            os.replace(staging / old_path.name, old_path)  # commit: the record goes last
        shutil.rmtree(staging, ignore_errors=True)
        _remove(_journal(self.folder, self.stem))


def _move(src: Path, dst: Path) -> None:
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif dst.exists() and src.is_dir():
        dst.unlink()
    os.replace(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# --- the whole folder ----------------------------------------------------------------------

def clean_stale(folder: Path) -> list[str]:
    """Remove staging folders of dead processes on this host (and pre-staging leftovers)."""
    removed = []
    me = host()
    journals = {p.name[1:-len(".swap.json")] for p in folder.glob(".*.swap.json")}
    for p in folder.glob(f".*{_STAGING}*"):
        parsed = parse_staging_name(p.name)
        if parsed is None:
            continue
        stem, holder_host, pid = parsed
        if stem in journals or holder_host != me or pid_alive(pid):
            continue
        _remove(p)
        removed.append(p.name)
    # Work folders of versions that wrote beside the outputs.
    for p in folder.glob(".*.work"):
        _remove(p)
        removed.append(p.name)
    # Partial files beside the outputs: a live runner sharing the folder may be writing
    # one right now (a swap journal), so only old ones are left over from a dead run.
    old = time.time() - _PARTIAL_AGE_S
    for p in folder.glob("*.partial"):
        try:
            if p.lstat().st_mtime < old:
                _remove(p)
                removed.append(p.name)
        except FileNotFoundError:
            pass
    for name in removed:
        log.info("%s: removed %s left by a dead run", folder, name)
    return removed
