"""Many slides in one run: the model is loaded once, each slide succeeds or fails alone.

Outputs are written to temporary names and renamed when complete, and a slide
whose complete outputs exist is skipped, so a crashed run or a shell loop simply
runs again. One bad slide is reported and the run goes on (unless ``fail_fast``).
Several runners may share an output folder: each slide is worked on under its claim
(:mod:`.claims`), by one runner at a time; ``--shard`` splits the inputs between
runners beforehand (:mod:`.shards`); ``--status`` keeps per-slide state (:mod:`.status`).
``--devices`` runs the slides on one worker process per device (:mod:`.devices`),
``--ray`` on the actors of a Ray cluster (:mod:`.ray_runner`); both serve each slide
with :class:`SlideWorker`, the same per-slide protocol as a one-process run.
Nothing here prints: progress goes to a :class:`RunEvents` the caller supplies, and
the summary is returned.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cerberus_cli.cohort import claims, commit
from cerberus_cli.cohort.device_list import resolve_devices
from cerberus_cli.cohort.inputs import SlideInput, collect_inputs
from cerberus_cli.cohort.run_record import utc_now
from cerberus_cli.cohort.shards import parse_shard, select
from cerberus_cli.cohort.slide_outputs import SlideOutputs
from cerberus_cli.cohort.status import StatusBook, read_status, write_status
from cerberus_cli.core.errors import CerberusError, InputError, Terminated
from cerberus_cli.core.processes import host
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.pipeline import Segmenter
from cerberus_cli.model.registry import load_model

log = logging.getLogger(__name__)

Status = Literal["done", "done with damage", "skipped", "running elsewhere", "failed",
                 "interrupted"]


@dataclass
class SlideOutcome:
    """The result of one slide in a run."""

    slide: str
    status: Status
    message: str = ""
    objects: int = 0
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    #: objects per task and class (done slides)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class RunSummary:
    """All slides of a run; ``ok`` is False when any slide failed."""

    slides: list[SlideOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status not in ("failed", "interrupted") for s in self.slides)

    def count(self, status: Status) -> int:
        return sum(s.status == status for s in self.slides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: counts by status and one entry per slide."""
        return {"done": self.count("done"), "done_with_damage": self.count("done with damage"),
                "skipped": self.count("skipped"),
                "running_elsewhere": self.count("running elsewhere"), "failed": self.count("failed"),
                "interrupted": self.count("interrupted"),
                "slides": [asdict(s) for s in self.slides]}


class RunEvents:
    """Progress of a run, for a caller that shows it; every method is a no-op here."""

    def run_started(self, slides: int) -> None:
        """``slides`` slides are to be segmented (skipped ones excluded)."""

    def slide_started(self, slide: SlideInput) -> None:
        """Work on ``slide`` begins."""

    def tiles(self, done: int, total: int, objects: int) -> None:
        """Progress within the current slide."""

    def slide_tiles(self, slide: SlideInput, done: int, total: int, objects: int) -> None:
        """Progress within ``slide`` (several slides run at once with --devices); by default
        :meth:`tiles`."""
        self.tiles(done, total, objects)

    def slide_finished(self, outcome: SlideOutcome) -> None:
        """A slide is done, skipped or failed."""


def segment(
    inputs: list[str] | tuple[str, ...],
    out_dir: str | Path,
    options: SegmentOptions | None = None,
    manifest: str | None = None,
    slides_dir: str | None = None,
    events: RunEvents | None = None,
) -> RunSummary:
    """Segment every slide in ``inputs`` (files, folders, globs) and ``manifest``.

    Per slide ``S`` the folder ``out_dir`` receives ``S.parquet`` (or
    ``S.geojson[.gz]``), ``S.tissue.zarr`` + ``S.tissue.png``, ``S.overlay.png``,
    optionally ``S.maps.zarr``, and last ``S.run.json``, whose presence marks the
    slide complete. Raises :class:`InputError` when nothing can be run at all.
    """
    if isinstance(inputs, (str, Path)):
        raise InputError(f"segment() takes a list of slide paths, not the single string {inputs!r}")
    options = options or SegmentOptions()
    events = events or RunEvents()
    loaded = load_model(options.model)
    log.info("model %s (sha256 %s...): weights licence: %s", options.model or "default",
             loaded.sha256[:12], loaded.licence)
    slides = collect_inputs(list(inputs), manifest, slides_dir)
    if not slides:
        raise InputError("no slides given (pass slide files, folders, globs or --manifest)")
    slides = _select_shard(slides, options.shard)
    devices = resolve_devices(options.devices) if options.devices is not None else None
    if options.ray is not None:
        from cerberus_cli.cohort.ray_runner import import_ray

        import_ray()  # a missing extra is a usage error, before any work
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    for name in commit.clean_stale(out) + claims.remove_leftovers(out):
        log.info("removed %s left in %s by a dead run", name, out)
    summary = RunSummary()
    book = StatusBook(out, options.status)
    todo: list[tuple[SlideInput, SlideOutputs, dict[str, Any]]] = []
    for item in slides:
        if item.error:
            _report(summary, events, SlideOutcome(str(item.path), "failed", item.error))
            book.finished(item, "failed", item.error)
            continue
        outputs = SlideOutputs(out, item.stem, options)
        try:
            provenance = _provenance(item, options, loaded.sha256)
        except (OSError, CerberusError) as exc:
            outcome = SlideOutcome(str(item.path), "failed", _message(item.path, exc))
            _report(summary, events, outcome)
            book.finished(item, "failed", outcome.message)
            continue
        # A first look without the claim: finished slides are skipped at once; the
        # answer is checked again under the claim (another runner may finish it meanwhile).
        existing = _existing(item, outputs, provenance, options, loaded.sha256)
        if existing is not None:
            _report(summary, events, existing)
            continue
        todo.append((item, outputs, provenance))
    if not todo:
        return summary
    events.run_started(len(todo))

    def report(outcome: SlideOutcome) -> None:
        _report(summary, events, outcome)

    if options.ray is not None or (devices is not None and len(devices) > 1):
        tasks = [(key, item, provenance) for key, (item, _, provenance) in enumerate(todo)]
        first = len(summary.slides)
        if options.ray is not None:
            from cerberus_cli.cohort.ray_runner import run_on_ray

            run_on_ray(tasks, out, options, loaded.sha256, events, report)
        else:
            from cerberus_cli.cohort.devices import run_on_devices

            run_on_devices(devices or [], tasks, out, options, loaded.sha256, events, report)
        # Outcomes arrive as workers finish; the summary lists them in input order.
        order = {str(item.path): key for key, (item, _, _) in enumerate(todo)}
        summary.slides[first:] = sorted(summary.slides[first:], key=lambda o: order.get(o.slide, 0))
        return summary
    if devices is not None:  # one device: this process is its worker
        options = replace(options, device=devices[0], devices=None)
    with Segmenter(loaded, options) as segmenter:
        for item, outputs, provenance in todo:
            try:
                outcome = _claimed(segmenter, item, outputs, events, provenance, book)
            except (KeyboardInterrupt, Terminated):
                report(SlideOutcome(str(item.path), "interrupted",
                                    "stopped by a signal; nothing of this slide was kept"))
                raise
            report(outcome)
            if outcome.status == "failed" and options.fail_fast:
                break
    return summary


def _select_shard(slides: list[SlideInput], spec: str | None) -> list[SlideInput]:
    """The slides of ``--shard`` (all of them without one)."""
    if spec is None:
        return slides
    shard = parse_shard(spec)
    mine = select(slides, shard, key=lambda item: item.stem)
    log.info("shard %s: %d of %d slides", shard, len(mine), len(slides))
    return mine


def _report(summary: RunSummary, events: RunEvents, outcome: SlideOutcome) -> None:
    summary.slides.append(outcome)
    events.slide_finished(outcome)


def _existing(item: SlideInput, outputs: SlideOutputs, provenance: dict[str, Any],
              options: SegmentOptions, model_sha256: str) -> SlideOutcome | None:
    """Skipped (same provenance) or failed (other provenance) when complete outputs exist."""
    if commit.swap_pending(outputs.final, item.stem):
        return None  # finished (or dropped) under the claim first
    record = outputs.committed()
    if record is None or options.overwrite:
        return None
    diffs = commit.differences(record, provenance["input"], model_sha256,
                               provenance["options_all"])
    if diffs:
        return SlideOutcome(
            str(item.path), "failed",
            f"{outputs.record_path}: outputs were made with another {', '.join(diffs)}; "
            "use --overwrite to replace them")
    return SlideOutcome(str(item.path), "skipped",
                        "complete outputs exist (same slide, model and options)")


def _claimed(segmenter: Segmenter, item: SlideInput, outputs: SlideOutputs, events: RunEvents,
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
            done = commit.recover(folder, item.stem)
            if done:
                log.warning("%s: %s", item.stem, done)
            if previous is not None and previous.token != claim.token and previous.pid > 0:
                _remove_staging(folder, item.stem, previous.host, previous.pid)
            existing = _existing(item, outputs, provenance, options, segmenter.loaded.sha256)
        except (OSError, CerberusError) as exc:
            existing = SlideOutcome(str(item.path), "failed", _message(item.path, exc))
        if existing is not None:
            return existing
        book.started(item)
        events.slide_started(item)
        try:
            outcome = _one(segmenter, item, outputs, events, provenance, claim)
        except (KeyboardInterrupt, Terminated):
            book.finished(item, "interrupted", "stopped by a signal; nothing of this slide was kept")
            raise
        if outcome.status != "running elsewhere":  # a lost claim: the new holder keeps the status
            book.finished(item, outcome.status, outcome.message if outcome.status == "failed" else "",
                          outcome.objects, outcome.counts)
        return outcome


def _remove_staging(folder: Path, stem: str, holder_host: str, pid: int) -> None:
    """The staging folder a dead holder left (named as :func:`commit.staging_name` names it)."""
    staging = folder / f".{stem}.staging.{holder_host}.{pid}"
    if staging.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        log.info("%s: removed %s left by a dead runner", stem, staging.name)


class SlideWorker:
    """A process that serves many slides (a ``--devices`` worker, a Ray actor).

    The model is loaded once, on ``device``; each slide goes through the same claim,
    commit record and status file as in a one-process run (:func:`segment`).
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
            return _claimed(self.segmenter, item, outputs, events or RunEvents(), provenance,
                            self.book, takeover)
        except Exception as exc:  # e.g. the output folder became unwritable: this slide fails
            log.debug("slide %s failed", item.path, exc_info=True)
            return SlideOutcome(str(item.path), "failed", _message(item.path, exc))

    def close(self) -> None:
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
    with got:
        try:
            commit.recover(out, item.stem)
            _remove_staging(out, item.stem, host(), pid)
            existing = _existing(item, SlideOutputs(out, item.stem, options), provenance, options,
                                 model_sha256)
        except (OSError, CerberusError) as exc:
            log.warning("%s: %s", item.stem, _message(item.path, exc))
            existing = None
        if existing is not None and existing.status == "skipped":
            record = commit.read_commit(out, item.stem) or {}
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


def _message(path: Path, exc: BaseException) -> str:
    if isinstance(exc, CerberusError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{getattr(exc, 'filename', None) or path}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _provenance(item: SlideInput, options: SegmentOptions, model_sha256: str) -> dict[str, Any]:
    """What made the outputs: the slide's fingerprint, the model, every result-shaping option."""
    opts = options.to_dict()
    opts["mpp"] = item.mpp or options.mpp
    if options.mask:
        opts["mask"] = commit.file_digest(Path(options.mask).resolve()) | {
            "path": str(Path(options.mask).resolve())}
    return {"input": commit.input_fingerprint(item.path), "model_sha256": model_sha256,
            "options": commit.result_options(opts), "options_all": opts}


def _one(segmenter: Segmenter, item: SlideInput, outputs: SlideOutputs, events: RunEvents,
         provenance: dict[str, Any], claim: claims.Claim | None = None) -> SlideOutcome:
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
        return SlideOutcome(str(item.path), "failed", _message(item.path, exc),
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
