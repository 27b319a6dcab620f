"""The run directory of a training run.

::

    RUN/config.json           the options and the model config
    RUN/metrics.jsonl         one JSON record per logged step or validation
    RUN/metrics.csv           the same records as a table (rewritten as the run goes)
    RUN/checkpoints/last.pt   the latest weights with the whole training state (one file,
                              see :mod:`cerberus_cli.training.run_checkpoints`)
    RUN/checkpoints/best.pt   the weights with the best validation score
    RUN/plot.png              training losses and validation metrics

Every file but ``metrics.jsonl`` (appended line by line) is written to an owned
temporary name and renamed when complete. A folder can be in one of four states
(:meth:`RunDir.state`): empty (or missing), a run with a checkpoint, the remains of a
run that stopped before its first checkpoint, or something else, which no option
makes the trainer touch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.training.tempfiles import remove_stale, stale_owner, write_file

log = logging.getLogger(__name__)

#: What a run directory holds; anything else makes a folder "not a run directory".
RUN_ENTRIES = frozenset({"config.json", "metrics.jsonl", "metrics.csv", "plot.png", "checkpoints"})

FolderState = Literal["empty", "run", "stub", "foreign"]
#: How a run uses its folder: a fresh start (replacing what is there), a resume from the
#: last checkpoint, or a fresh start of a run that stopped before its first checkpoint.
Mode = Literal["new", "resume", "restart"]


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    keys = sorted({k for r in records for k in r}, key=lambda k: (k not in ("kind", "step"), k))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(records)


class RunDir:
    """Files of one run: where they are, the folder's state, and their writers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics_jsonl = self.path / "metrics.jsonl"
        self.metrics_csv = self.path / "metrics.csv"
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.plot = self.path / "plot.png"

    # --- the folder -------------------------------------------------------------------
    def state(self) -> FolderState:
        """``empty`` (or missing), ``run`` (has a last checkpoint), ``stub`` (only the
        files of a run that stopped before its first checkpoint) or ``foreign``."""
        if not self.path.exists():
            return "empty"
        if not self.path.is_dir():
            raise InputError(f"{self.path}: exists and is not a folder (give a run directory)")
        try:
            entries = list(self.path.iterdir())
        except OSError as exc:
            raise InputError(f"{self.path}: cannot list the run directory: {exc.strerror or exc}") from None
        if not entries:
            return "empty"
        if self.last.is_file():
            return "run"
        if self.config.is_file() or all(_is_run_entry(e.name) for e in entries):
            return "stub"
        return "foreign"

    @staticmethod
    def prepare(path: str | Path, resume: bool, overwrite: bool) -> tuple[RunDir, Mode]:
        """The run directory at ``path`` and how this run may use it; changes nothing.

        Raises:
            InputError: nothing to resume, or a folder the run may not use as asked.
        """
        run = RunDir(path)
        state = run.state()
        if resume:
            if state == "run":
                return run, "resume"
            if state == "stub":
                return run, "restart"
            if state == "empty":
                raise InputError(f"{run.path}: nothing to resume (no checkpoints/last.pt)")
            raise InputError(f"{run.path}: nothing to resume: not a run directory (no checkpoints/last.pt)")
        if state == "empty":
            run._check_creatable()
            return run, "new"
        if overwrite:
            if state == "foreign":
                raise InputError(f"{run.path}: refusing to overwrite a folder that is not a run directory")
            return run, "new"
        if state == "stub":
            raise InputError(f"{run.path}: holds a run that stopped before its first checkpoint "
                             "(use --resume to start it again or --overwrite to replace it)")
        raise InputError(f"{run.path}: run directory exists and is not empty "
                         "(use --resume to continue it or --overwrite to replace it)")

    def _check_creatable(self) -> None:
        """Fail now, not after the data check, when the run folder cannot be made."""
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"{self.path}: cannot be created: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{self.path}: cannot be created: {parent} is not writable")

    def create(self, config: dict[str, Any]) -> None:
        """Start the run here: remove the files an earlier run left, then write ``config``.

        Only called after :meth:`prepare` allowed it, so the folder is empty, a run
        being overwritten, or the remains of a run that never reached a checkpoint.
        Files that are not a run's are left where they are.
        """
        try:
            if self.path.is_dir():
                for entry in sorted(self.path.iterdir()):
                    if not _is_run_entry(entry.name):
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CerberusError(f"{self.path}: cannot prepare the run directory: {exc.strerror or exc}") from None
        self.write_config(config)

    def remove_stale(self) -> list[Path]:
        """Remove temporary files whose writer is gone (see :mod:`~cerberus_cli.training.tempfiles`)."""
        return remove_stale(self.path, self.checkpoints)

    # --- config -----------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        text = json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
        write_file(self.config, lambda tmp: tmp.write_text(text))

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.config}: cannot read run config: {exc}") from None

    # --- metrics ----------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl."""
        try:
            with open(self.metrics_jsonl, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            raise CerberusError(f"{self.metrics_jsonl}: cannot be written: {exc.strerror or exc}") from None

    def records(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl; a line that is not a JSON object is skipped with a warning."""
        if not self.metrics_jsonl.is_file():
            return []
        out = []
        for n, line in enumerate(self.metrics_jsonl.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            record = _parse(line.encode())
            if record is None:
                log.warning("%s: line %d is not a JSON record; skipped", self.metrics_jsonl, n)
                continue
            out.append(record)
        return out

    def metrics_mark(self) -> dict[str, Any]:
        """Byte length and SHA-256 of metrics.jsonl now (recorded in each checkpoint)."""
        data = self.metrics_jsonl.read_bytes() if self.metrics_jsonl.is_file() else b""
        return {"offset": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def restore_metrics(self, mark: dict[str, Any] | None, step: int) -> None:
        """Cut metrics.jsonl back to what it held at the checkpoint a resume starts from.

        Records logged after the checkpoint are dropped (the resumed run logs them
        again), a torn last line with a warning. When the file's first ``offset``
        bytes are not what the checkpoint recorded (``mark``, None for checkpoints of
        earlier versions), every readable record up to ``step`` is kept instead.
        """
        path = self.metrics_jsonl
        data = path.read_bytes() if path.is_file() else b""
        offset = int(mark["offset"]) if mark else -1
        if mark and len(data) >= offset and hashlib.sha256(data[:offset]).hexdigest() == mark["sha256"]:
            keep, dropped = data[:offset], data[offset:]
            if dropped and not dropped.endswith(b"\n"):
                log.warning("%s: dropped a torn last line (the run stopped while writing it)", path)
            if dropped.strip():
                log.info("%s: dropped %d record(s) logged after the checkpoint of step %d",
                         path, len(dropped.rstrip(b"\n").split(b"\n")), step)
        else:
            if mark:
                log.warning("%s: not as the checkpoint of step %d recorded it; keeping its readable "
                            "records up to that step", path, step)
            lines = data.split(b"\n")
            kept: list[bytes] = []
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                record = _parse(line)
                if record is None:
                    torn = n == len(lines)  # no newline after it: cut short by a kill
                    log.warning("%s: dropped %s", path,
                                "a torn last line (the run stopped while writing it)" if torn
                                else f"line {n}, not a JSON record")
                elif record.get("kind") != "summary" and _step(record) <= step:
                    kept.append(line + b"\n")
            keep = b"".join(kept)
        if keep != data:
            write_file(path, lambda tmp: tmp.write_bytes(keep))

    def write_csv(self) -> None:
        """Rewrite metrics.csv from metrics.jsonl."""
        records = self.records()
        write_file(self.metrics_csv, lambda tmp: _write_csv(tmp, records))


def _is_run_entry(name: str) -> bool:
    """Whether ``name`` in a run folder is a run's file (or a temporary file)."""
    return name in RUN_ENTRIES or name.endswith(".partial") or stale_owner(name) is not None


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _step(record: dict[str, Any]) -> float:
    step = record.get("step", 0)
    return step if isinstance(step, (int, float)) else float("inf")
