"""The state of a cohort in one output folder: per-slide status files and their summary.

With ``--status`` every slide a runner works on gets ``OUT/_status/S.json`` (state,
attempts, host, pid, start, end, duration, error, object counts), rewritten
atomically when the slide starts and when it ends, only by the runner holding the
slide's claim. :func:`cohort_status` reads the folder and sorts each slide into
``done`` (its commit record is valid), ``running`` (a live claim), ``failed`` (its
last attempt failed), ``stale`` (started, but its runner is gone) or ``pending`` (listed
in the manifest, not started). Nothing here prints.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cerberus_cli.cohort import claims, commit
from cerberus_cli.cohort.inputs import read_manifest
from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.optionspec import opt
from cerberus_cli.core.processes import host

if TYPE_CHECKING:
    from cerberus_cli.cohort.inputs import SlideInput

STATUS_DIR = "_status"
STATUS_FORMAT = "cerberus-cli/slide-status"
State = Literal["done", "running", "failed", "stale", "pending"]
STATES: tuple[State, ...] = ("done", "failed", "running", "stale", "pending")


def status_path(folder: Path, stem: str) -> Path:
    return folder / STATUS_DIR / f"{stem}.json"


def read_status(folder: Path, stem: str) -> dict[str, Any] | None:
    """A slide's status record, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(status_path(folder, stem).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(folder: Path, stem: str, record: dict[str, Any]) -> None:
    """Replace a slide's status record atomically (readers see the old one or the new one)."""
    (folder / STATUS_DIR).mkdir(exist_ok=True)
    AtomicPath(status_path(folder, stem), overwrite=True).write_text(
        json.dumps({"format": STATUS_FORMAT, "slide": stem, **record}, indent=2))


class StatusBook:
    """Writes the status records of one runner (a no-op when ``enabled`` is False)."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.folder = folder
        self.enabled = enabled
        self._started: dict[str, dict[str, Any]] = {}

    def started(self, item: SlideInput) -> None:
        """The slide is claimed and work begins: one more attempt."""
        if not self.enabled:
            return
        previous = read_status(self.folder, item.stem) or {}
        record = {"state": "running", "path": str(item.path.resolve()),
                  "attempts": int(previous.get("attempts", 0)) + 1,
                  "host": host(), "pid": os.getpid(), "start": time.time(), "end": None,
                  "duration_s": None, "error": None, "objects": None, "counts": None}
        self._started[item.stem] = record
        write_status(self.folder, item.stem, record)

    def finished(self, item: SlideInput, state: str, error: str = "", objects: int = 0,
                 counts: dict[str, dict[str, int]] | None = None) -> None:
        """The slide ended: ``state`` is done, done with damage, failed or interrupted."""
        if not self.enabled:
            return
        record = self._started.pop(item.stem, None)
        if record is None:  # failed before it was claimed (e.g. a missing file)
            previous = read_status(self.folder, item.stem) or {}
            record = {"path": str(item.path.resolve()), "attempts": int(previous.get("attempts", 0)) + 1,
                      "host": host(), "pid": os.getpid(), "start": time.time()}
        end = time.time()
        record.update(state=state, end=end, duration_s=round(end - record["start"], 3),
                      error=error or None, objects=objects if state.startswith("done") else None,
                      counts=counts if state.startswith("done") else None)
        write_status(self.folder, item.stem, record)


# --- the summary -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusOptions:
    """Options of ``cerberus status`` (and :func:`cohort_status`)."""

    manifest: str | None = opt(None, "GDC manifest (id, filename) or CSV (path[,mpp]) of the cohort: "
                               "its slides not yet started are listed as pending.",
                               metavar="MANIFEST")
    slides_dir: str | None = opt(None, "Folder where manifest file names are found "
                                 "(as for segment).")


@dataclass
class SlideState:
    """One slide's place in the cohort."""

    slide: str
    state: State
    message: str = ""
    host: str | None = None
    pid: int | None = None
    attempts: int = 0
    start: float | None = None
    end: float | None = None
    duration_s: float | None = None
    objects: int | None = None


@dataclass
class CohortStatus:
    """Every slide known in an output folder (and its manifest), by state."""

    folder: str
    slides: list[SlideState] = field(default_factory=list)

    def count(self, state: State) -> int:
        return sum(s.state == state for s in self.slides)

    @property
    def complete(self) -> bool:
        """True when every slide is done (the exit status 0 of ``cerberus status``)."""
        return all(s.state == "done" for s in self.slides)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "complete": self.complete,
                **{state: self.count(state) for state in STATES},
                "slides": [asdict(s) for s in self.slides]}


def _stems(folder: Path) -> set[str]:
    """Slides this folder knows of: commit records, status records and claims."""
    stems = {p.name[: -len(".run.json")] for p in folder.glob("*.run.json") if p.is_file()}
    if (folder / STATUS_DIR).is_dir():
        stems |= {p.stem for p in (folder / STATUS_DIR).glob("*.json")}
    stems |= {p.name[1: -len(".claim")] for p in folder.glob(".*.claim")}
    return stems


def slide_state(folder: Path, stem: str) -> SlideState:
    """Where slide ``stem`` stands in ``folder`` (see the module docstring for the rules)."""
    status = read_status(folder, stem) or {}
    base: dict[str, Any] = {"host": status.get("host"), "pid": status.get("pid"),
            "attempts": int(status.get("attempts") or 0), "start": status.get("start"),
            "end": status.get("end"), "duration_s": status.get("duration_s"),
            "objects": status.get("objects")}
    holder = claims.read_claim(folder, stem)
    if holder is not None and holder.alive():
        return SlideState(stem, "running", f"claimed by {holder.describe()}",
                          **{**base, "host": holder.host, "pid": holder.pid})
    record = commit.read_commit(folder, stem)
    if record is not None:
        base["objects"] = record.get("objects", base["objects"])
        message = "done with damage" if record.get("status") == "done with damage" else ""
        return SlideState(stem, "done", message, **base)
    state = status.get("state")
    if state == "failed":
        return SlideState(stem, "failed", str(status.get("error") or "failed"), **base)
    if holder is not None:
        return SlideState(stem, "stale", f"claim of {holder.describe()} is dead (no heartbeat "
                          "or process gone); the next run takes it over", **base)
    if state in ("running", "interrupted"):
        what = "interrupted by a signal" if state == "interrupted" else "its runner is gone"
        return SlideState(stem, "stale", f"started, not finished: {what}", **base)
    return SlideState(stem, "pending", "not started", **base)


def cohort_status(out_dir: str | Path, options: StatusOptions | None = None) -> CohortStatus:
    """The state of every slide in ``out_dir`` and, with a manifest, of every listed slide."""
    options = options or StatusOptions()
    folder = Path(out_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: output folder not found")
    stems = _stems(folder)
    order: list[str] = []
    if options.manifest:
        order = [item.stem for item in read_manifest(options.manifest, options.slides_dir)]
    ordered = list(dict.fromkeys(order)) + sorted(stems - set(order))
    return CohortStatus(str(folder), [slide_state(folder, stem) for stem in ordered])
