"""A process that serves many slides: a ``--devices`` worker or a Ray actor.

:class:`SlideWorker` loads the model once and runs each slide it is given through
the per-slide protocol of :mod:`.slide_run`. :func:`settle_dead_worker` is the
parent's side: it makes a slide whole again after the worker process died on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cerberus_cli.cohort import claims
from cerberus_cli.cohort.inputs import SlideInput
from cerberus_cli.cohort.outcomes import RunEvents, SlideOutcome, Status
from cerberus_cli.cohort.slide_outputs import SlideOutputs
from cerberus_cli.cohort.slide_run import existing_outcome, failure_message, run_claimed
from cerberus_cli.cohort.status import StatusBook, read_status, write_status
from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.core.processes import host
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.pipeline import Segmenter
from cerberus_cli.model.registry import load_model

log = logging.getLogger(__name__)


class SlideWorker:
    """A process that serves many slides (a ``--devices`` worker, a Ray actor).

    The model is loaded once, on ``device``; each slide goes through the same claim,
    commit record and status file as in a one-process run (:func:`.slide_run.run_claimed`).
    """

    def __init__(self, out: Path, options: SegmentOptions, device: str,
                 model_sha256: str | None = None) -> None:
        self.out = Path(out)
        self.options = replace(options, device=device, devices=None, ray=None)
        loaded = load_model(self.options.model)
        if model_sha256 and loaded.sha256 != model_sha256:
            raise InputError(f"{loaded.source}: the model file changed after the run started")
        self.segmenter = Segmenter(loaded, self.options)
        self.book = StatusBook(self.out, self.options.status)

    def run(self, item: SlideInput, provenance: dict[str, Any], events: RunEvents | None = None,
            takeover: Callable[[claims.Holder], bool] | None = None) -> SlideOutcome:
        """Segment one slide (``provenance`` as the run computed it); interrupts propagate."""
        outputs = SlideOutputs(self.out, item.stem, self.options)
        try:
            return run_claimed(self.segmenter, item, outputs, events or RunEvents(), provenance,
                               self.book, takeover)
        except Exception as exc:  # e.g. the output folder became unwritable: this slide fails
            log.debug("slide %s failed", item.path, exc_info=True)
            return SlideOutcome(str(item.path), "failed", failure_message(item.path, exc))

    def close(self) -> None:
        """Shut the segmenter's post-processing pool down."""
        self.segmenter.close()

    def __enter__(self) -> SlideWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def settle_dead_worker(out: Path, item: SlideInput, provenance: dict[str, Any],
                       options: SegmentOptions, model_sha256: str, pid: int, why: str) -> SlideOutcome:
    """The outcome of a slide whose worker process (``pid``, this host) died on it.

    The folder is made whole first: the dead claim is taken over, an interrupted swap
    finished (or dropped), the staging folder removed and the status file closed. A
    slide committed just before the death counts as done; any other fails.
    """
    message = f"{why} while segmenting it; nothing of this slide was kept (run again to retry)"
    got = claims.acquire(out, item.stem, options.claim_timeout)
    if isinstance(got, claims.Holder):  # another runner took it over meanwhile
        return SlideOutcome(str(item.path), "failed", message)
    outputs = SlideOutputs(out, item.stem, options)
    with got:
        try:
            outputs.slide_commit.recover()
            outputs.slide_commit.remove_staging(host(), pid)
            existing = existing_outcome(item, outputs, provenance, options, model_sha256)
        except (OSError, CerberusError) as exc:
            log.warning("%s: %s", item.stem, failure_message(item.path, exc))
            existing = None
        if existing is not None and existing.status == "skipped":
            record = outputs.committed() or {}
            state: Status = "done with damage" if record.get("status") == "done with damage" else "done"
            objects, counts = int(record.get("objects") or 0), record.get("counts") or {}
            _close_status(out, item, pid, options.status, state, "", objects, counts)
            return SlideOutcome(str(item.path), state, f"committed just before {why}",
                                objects=objects, counts=counts)
        _close_status(out, item, pid, options.status, "failed", message)
        return SlideOutcome(str(item.path), "failed", message)


def _close_status(out: Path, item: SlideInput, pid: int, enabled: bool, state: str, error: str,
                  objects: int = 0, counts: dict[str, dict[str, int]] | None = None) -> None:
    """End the "running" status record a dead worker left (the attempt it counted stands)."""
    if not enabled:
        return
    record = read_status(out, item.stem)
    if record is None or record.get("state") != "running" or record.get("pid") != pid:
        return
    end = time.time()
    record = {k: v for k, v in record.items() if k not in ("format", "slide")}
    record.update(state=state, end=end, duration_s=round(end - float(record.get("start") or end), 3),
                  error=error or None, objects=objects if state.startswith("done") else None,
                  counts=counts if state.startswith("done") else None)
    write_status(out, item.stem, record)
