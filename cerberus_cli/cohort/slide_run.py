"""One slide under its claim: the protocol every runner follows, whichever process runs it.

The one-process loop (:mod:`.runs`), a device worker (:mod:`.devices`) and a Ray actor
(:mod:`.ray_runner`) all come here for each slide: take the claim (:mod:`.claims`),
finish or drop a swap a dead run left (:mod:`.commit`), skip a slide whose committed
outputs have the same provenance, then build the outputs in staging
(:class:`~.slide_outputs.SlideOutputs`, through the slide's
:class:`~.commit.SlideCommit`), check the claim is still ours and commit.
The status file (:mod:`.status`) follows each step.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cerberus_cli.cohort import claims
from cerberus_cli.cohort.inputs import SlideInput
from cerberus_cli.cohort.outcomes import RunEvents, SlideOutcome, Status
from cerberus_cli.cohort.provenance import differences
from cerberus_cli.cohort.run_record import utc_now
from cerberus_cli.cohort.slide_outputs import SlideOutputs
from cerberus_cli.cohort.status import StatusBook
from cerberus_cli.core.errors import CerberusError, Terminated
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.pipeline import Segmenter

log = logging.getLogger(__name__)


def existing_outcome(item: SlideInput, outputs: SlideOutputs, provenance: dict[str, Any],
                     options: SegmentOptions, model_sha256: str) -> SlideOutcome | None:
    """Skipped (same provenance) or failed (other provenance) when complete outputs exist."""
    if outputs.slide_commit.pending:
        return None  # finished (or dropped) under the claim first
    record = outputs.committed()
    if record is None or options.overwrite:
        return None
    diffs = differences(record, provenance["input"], model_sha256, provenance["options_all"])
    if diffs:
        return SlideOutcome(
            str(item.path), "failed",
            f"{outputs.record_path}: outputs were made with another {', '.join(diffs)}; "
            "use --overwrite to replace them")
    return SlideOutcome(str(item.path), "skipped",
                        "complete outputs exist (same slide, model and options)")


def run_claimed(segmenter: Segmenter, item: SlideInput, outputs: SlideOutputs, events: RunEvents,
                provenance: dict[str, Any], book: StatusBook,
                takeover: Callable[[claims.Holder], bool] | None = None) -> SlideOutcome:
    """One slide under its claim: skipped as running elsewhere when a live runner holds it.

    ``takeover`` may declare a live-looking holder dead (a Ray actor's earlier attempt
    at this very slide, on another host, before its heartbeat times out).
    """
    options = segmenter.options
    folder = outputs.final
    previous = claims.read_claim(folder, item.stem, options.claim_timeout)
    got = claims.acquire(folder, item.stem, options.claim_timeout)
    if isinstance(got, claims.Holder) and takeover is not None and takeover(got):
        log.warning("%s: taking over the claim of %s, an earlier attempt of this run that died",
                    item.stem, got.describe())
        claims.break_claim(folder, item.stem, got)
        previous, got = got, claims.acquire(folder, item.stem, options.claim_timeout)
    if isinstance(got, claims.Holder):
        return SlideOutcome(str(item.path), "running elsewhere", f"claimed by {got.describe()}")
    with got as claim:
        try:
            done = outputs.slide_commit.recover()
            if done:
                log.warning("%s: %s", item.stem, done)
            if previous is not None and previous.token != claim.token and previous.pid > 0:
                outputs.slide_commit.remove_staging(previous.host, previous.pid)
            existing = existing_outcome(item, outputs, provenance, options, segmenter.loaded.sha256)
        except (OSError, CerberusError) as exc:
            existing = SlideOutcome(str(item.path), "failed", failure_message(item.path, exc))
        if existing is not None:
            return existing
        book.started(item)
        events.slide_started(item)
        try:
            outcome = _segment(segmenter, item, outputs, events, provenance, claim)
        except (KeyboardInterrupt, Terminated):
            book.finished(item, "interrupted", "stopped by a signal; nothing of this slide was kept")
            raise
        if outcome.status != "running elsewhere":  # a lost claim: the new holder keeps the status
            book.finished(item, outcome.status, outcome.message if outcome.status == "failed" else "",
                          outcome.objects, outcome.counts)
        return outcome


def failure_message(path: Path, exc: BaseException) -> str:
    """The one-line reason a slide failed."""
    if isinstance(exc, CerberusError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{getattr(exc, 'filename', None) or path}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _segment(segmenter: Segmenter, item: SlideInput, outputs: SlideOutputs, events: RunEvents,
             provenance: dict[str, Any], claim: claims.Claim | None = None) -> SlideOutcome:
    """Segment the slide into staging and commit it (the claim is checked just before)."""
    from cerberus_cli.slides import detect_tissue, load_mask, open_slide

    opts = segmenter.options
    t0 = time.perf_counter()
    started = utc_now()
    record = {k: v for k, v in provenance.items() if k != "options_all"}
    try:
        with open_slide(item.path, backend=opts.backend, mpp=item.mpp or opts.mpp) as slide:
            t_mask = time.perf_counter()
            mask = load_mask(opts.mask, slide) if opts.mask else detect_tissue(slide, options=opts.tissue)
            mask_s = time.perf_counter() - t_mask
            log.info("%s: %dx%d px at %.4g um/px, tissue %.1f%% (%s)", item.path,
                     *slide.dimensions, slide.mpp, 100 * mask.fraction, mask.source)
            if mask.warning:
                log.warning("%s: %s", item.path, mask.warning)
            work = outputs.begin()
            run = segmenter.run(slide, mask, outputs, item.stem, _progress(events, item), work_dir=work)
            run.timings["tissue_mask_s"] = mask_s
            written = outputs.write_record(item, slide, segmenter, run, time.perf_counter() - t0,
                                           record, started)
            if claim is not None:
                claim.check()  # never commit a slide another runner has taken over
            outputs.commit()
        log.info("%s: %d objects in %.1f s", item.path, run.objects, time.perf_counter() - t0)
        status: Status = "done with damage" if run.damage else "done"
        message = (f"{len(run.damage)} tile(s) with unreadable or implausible pixels"
                   if run.damage else "")
        return SlideOutcome(str(item.path), status, message, objects=run.objects,
                            seconds=time.perf_counter() - t0, outputs=written, counts=run.counts)
    except BaseException as exc:
        outputs.abort()
        if isinstance(exc, claims.ClaimLost):
            return SlideOutcome(str(item.path), "running elsewhere",
                                f"{exc}; this runner's result was dropped",
                                seconds=time.perf_counter() - t0)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or not isinstance(exc, Exception):
            raise  # interrupted: nothing of this slide is left; the caller reports it
        if not isinstance(exc, (CerberusError, OSError)):
            log.debug("slide %s failed", item.path, exc_info=True)  # one slide must not end a run
        return SlideOutcome(str(item.path), "failed", failure_message(item.path, exc),
                            seconds=time.perf_counter() - t0)


def _progress(events: RunEvents, item: SlideInput) -> Callable[[int, int, int], None]:
    """The pipeline's progress callback for ``item``.

    Test hook: with ``CERBERUS_TEST_KILL_DIR`` set, a file ``S.kill`` in that folder
    makes the process working on slide ``S`` kill itself (SIGKILL) mid-slide, once (the
    file is renamed ``S.killed`` first): how the tests kill a device worker or a Ray
    actor at a known point.
    """
    kill_dir = os.environ.get("CERBERUS_TEST_KILL_DIR")

    def progress(done: int, total: int, objects: int) -> None:
        events.slide_tiles(item, done, total, objects)
        if kill_dir:
            armed = Path(kill_dir) / f"{item.stem}.kill"
            try:
                os.rename(armed, armed.with_suffix(".killed"))
            except OSError:
                return
            os.kill(os.getpid(), signal.SIGKILL)

    return progress
