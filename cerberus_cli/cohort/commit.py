"""The per-slide commit protocol: a slide's outputs are final only when its commit record
(``S.run.json``, written last) is valid and every file it lists has its recorded size.

A slide is built in a staging folder ``OUT/.S.staging.<host>.<pid>/`` under its final
names, commit record included. The swap into ``OUT`` first writes a journal
(``OUT/.S.swap.json``), removes the old record (so the old set stops being
committed), moves the new files in, and moves the new record last. A run that dies
mid-swap leaves the journal: the next run finishes the swap from the staging folder,
whose record proves the new set complete. Staging folders of dead processes (same
host, pid gone) are removed by any later run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.hashing import file_sha256
from cerberus_cli.core.processes import host, pid_alive

log = logging.getLogger(__name__)

RECORD_FORMAT = "cerberus-cli/run-record"
RECORD_VERSION = 2
_MIB = 1 << 20
#: Age after which a partial file beside the outputs is a dead run's leftover.
_PARTIAL_AGE_S = 600.0


def record_path(folder: Path, stem: str) -> Path:
    return folder / f"{stem}.run.json"


def staging_name(stem: str) -> str:
    """Name of this process's staging folder: hidden, with host and pid."""
    return f".{stem}.staging.{host()}.{os.getpid()}"


def _journal(folder: Path, stem: str) -> Path:
    return folder / f".{stem}.swap.json"


# --- fingerprints ---------------------------------------------------------------------------

def file_digest(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file, or of a folder (hash of its sorted file digests)."""
    if path.is_dir():
        h = hashlib.sha256()
        total = 0
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            d = file_digest(f)
            total += d["size"]
            h.update(f"{f.relative_to(path).as_posix()}\0{d['size']}\0{d['sha256']}\n".encode())
        return {"size": total, "sha256": h.hexdigest(), "folder": True}
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def input_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Absolute path, size, mtime and a sha256 of the first and last MiB of a slide file.

    Two slides with the same name but other content differ here; reading 2 MiB keeps
    it cheap for 3 GB slides.
    """
    p = Path(path).resolve()
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        h.update(fh.read(_MIB))
        if st.st_size > 2 * _MIB:
            fh.seek(-_MIB, os.SEEK_END)
        h.update(fh.read(_MIB))
    return {"path": str(p), "size": st.st_size, "mtime": st.st_mtime,
            "sha256_head_tail": h.hexdigest()}


#: Options that do not change results (how fast, where, how verbose) stay out of provenance.
_NOT_PROVENANCE = {"batch_size", "workers", "post_workers", "overwrite", "fail_fast", "compile",
                   "channels_last", "fold_bn", "device", "max_bad_tiles", "shard", "claim_timeout", "status",
                   "devices", "ray", "ray_cpus"}


def is_result_option(name: str) -> bool:
    """True when option ``name`` shapes results (False for speed and run-control options)."""
    return name not in _NOT_PROVENANCE


def result_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options that shape the results (post-processing and file layout included)."""
    return {k: v for k, v in options.items() if k not in _NOT_PROVENANCE}


def differences(record: dict[str, Any], slide: dict[str, Any], model_sha256: str,
                options: dict[str, Any]) -> list[str]:
    """What differs between a commit record and the run about to start (empty: same)."""
    prov = record.get("provenance", {})
    out = []
    old_slide = prov.get("input", {})
    if old_slide.get("size") != slide["size"] or \
            old_slide.get("sha256_head_tail") != slide["sha256_head_tail"]:
        out.append(f"slide content (recorded {old_slide.get('path', '?')})")
    if prov.get("model_sha256") != model_sha256:
        out.append("model")
    # Through JSON, as recorded: tuples become lists, so equal options compare equal.
    old, new = _flat(prov.get("options", {})), _flat(json.loads(json.dumps(result_options(options))))
    out += [f"--{k.replace('_', '-')}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return out


def _flat(options: dict[str, Any]) -> dict[str, Any]:
    """Nested option groups (post-processing, writer, tissue) flattened to their flag names."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict) and key != "mask":
            out.update(_flat(value))
        else:
            out[key] = value
    return out


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


# --- staging and swapping ------------------------------------------------------------------

def _move(src: Path, dst: Path) -> None:
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif dst.exists() and src.is_dir():
        dst.unlink()
    os.replace(src, dst)


def swap_in(folder: Path, stem: str, staging: Path) -> None:
    """Make the staged set final (see the module docstring for the order of steps)."""
    new_record = json.loads(record_path(staging, stem).read_text())
    AtomicPath(_journal(folder, stem), overwrite=True).write_text(json.dumps({"staging": staging.name}))
    _finish_swap(folder, stem, staging, new_record)


def _finish_swap(folder: Path, stem: str, staging: Path, new_record: dict[str, Any]) -> None:
    old_path = record_path(folder, stem)
    old_files: set[str] = set()
    try:
        old_files = set(json.loads(old_path.read_text()).get("files", {}))
    except (OSError, ValueError):
        pass
    if old_path.exists() and (staging / old_path.name).exists():
        old_path.unlink()  # from here the old set is no longer committed
    for name in new_record["files"]:
        if (staging / name).exists():
            _move(staging / name, folder / name)
    for name in old_files - set(new_record["files"]):
        _remove(folder / name)
    if (staging / old_path.name).exists():
        os.replace(staging / old_path.name, old_path)  # commit: the record goes last
    shutil.rmtree(staging, ignore_errors=True)
    _remove(_journal(folder, stem))


def swap_pending(folder: Path, stem: str) -> bool:
    """True when a dead run left a swap of this slide unfinished (see :func:`recover`)."""
    return _journal(folder, stem).exists()


def recover(folder: Path, stem: str) -> str | None:
    """Finish (or drop) a swap a dead run left behind; returns what was done, if anything."""
    journal = _journal(folder, stem)
    if not journal.exists():
        return None
    try:
        staging = folder / json.loads(journal.read_text())["staging"]
        new_record = json.loads(record_path(staging, stem).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        _remove(journal)  # the staged set never became whole: the old set (if any) stands
        return "dropped an unfinished swap"
    _finish_swap(folder, stem, staging, new_record)
    return "finished an interrupted swap"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def clean_stale(folder: Path) -> list[str]:
    """Remove staging folders of dead processes on this host (and pre-staging leftovers)."""
    removed = []
    me = host()
    journals = {p.name[1:-len(".swap.json")] for p in folder.glob(".*.swap.json")}
    for p in folder.glob(".*.staging.*"):
        stem, _, rest = p.name[1:].partition(".staging.")
        h, _, pid = rest.rpartition(".")
        if stem in journals or h != me or not pid.isdigit() or pid_alive(int(pid)):
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
