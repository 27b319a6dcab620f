"""Many slides in one run: ``segment()``, the model loaded once, each slide alone.

The calling process decides what to run: the inputs (:mod:`.inputs`), this runner's
part of them (``--shard``, :mod:`.shards`), the slides whose committed outputs already
have the same provenance (skipped) or another one (failed unless ``--overwrite``).
The rest are segmented here, on one worker process per device (``--devices``,
:mod:`.devices`) or on the actors of a Ray cluster (``--ray``, :mod:`.ray_runner`);
every slide goes through the same protocol (:mod:`.slide_run`: claim, staging,
commit record, status file), so a crashed run or a shell loop simply runs again and
several runners may share one output folder. One bad slide is reported and the run
goes on (unless ``fail_fast``). Nothing here prints: progress goes to the
:class:`~.outcomes.RunEvents` the caller supplies, and the summary is returned.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from cerberus_cli.cohort import claims, commit
from cerberus_cli.cohort.device_list import resolve_devices
from cerberus_cli.cohort.devices import run_on_devices
from cerberus_cli.cohort.inputs import SlideInput, collect_inputs
from cerberus_cli.cohort.outcomes import RunEvents, RunSummary, SlideOutcome
from cerberus_cli.cohort.provenance import slide_provenance
from cerberus_cli.cohort.ray_runner import import_ray, run_on_ray
from cerberus_cli.cohort.shards import parse_shard, select
from cerberus_cli.cohort.slide_outputs import SlideOutputs
from cerberus_cli.cohort.slide_run import existing_outcome, failure_message, run_claimed
from cerberus_cli.cohort.status import StatusBook
from cerberus_cli.core.errors import CerberusError, InputError, Terminated
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.pipeline import Segmenter
from cerberus_cli.model.checkpoint import LoadedModel
from cerberus_cli.model.registry import load_model
from cerberus_cli.postprocess.options import describe_calibration

log = logging.getLogger(__name__)

#: A slide to segment: the slide, its outputs and its provenance.
Todo = tuple[SlideInput, SlideOutputs, dict[str, Any]]


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
    optionally ``S.maps.zarr``, and last the commit record ``S.run.json``: the slide's
    outputs count only when that record is valid and lists them whole. Raises
    :class:`InputError` when nothing can be run at all.
    """
    if isinstance(inputs, (str, Path)):
        raise InputError(f"segment() takes a list of slide paths, not the single string {inputs!r}")
    options = options or SegmentOptions()
    events = events or RunEvents()
    loaded = load_model(options.model)
    log.info("model %s (sha256 %s...): weights licence: %s", options.model or "default",
             loaded.sha256[:12], loaded.licence)
    if loaded.config.postprocess and options.post.model_calibration:
        log.info("post-processing calibrated for this model (where not set): %s",
                 describe_calibration(loaded.config.postprocess))
    slides = collect_inputs(list(inputs), manifest, slides_dir)
    if not slides:
        raise InputError("no slides given (pass slide files, folders, globs or --manifest)")
    slides = _select_shard(slides, options.shard)
    devices = resolve_devices(options.devices) if options.devices is not None else None
    if options.ray is not None:
        import_ray()  # a missing extra is a usage error, before any work
    out = _output_folder(out_dir)
    for name in commit.clean_stale(out) + claims.remove_leftovers(out):
        log.info("removed %s left in %s by a dead run", name, out)
    summary = RunSummary()
    book = StatusBook(out, options.status)
    todo = _to_segment(slides, out, options, loaded.sha256, book, summary, events)
    if not todo:
        return summary
    events.run_started(len(todo))
    if options.ray is not None or (devices is not None and len(devices) > 1):
        _run_on_workers(todo, out, options, devices, loaded.sha256, summary, events)
    else:
        if devices is not None:  # one device: this process is its worker
            options = replace(options, device=devices[0], devices=None)
        _run_here(todo, loaded, options, book, summary, events)
    return summary


def _select_shard(slides: list[SlideInput], spec: str | None) -> list[SlideInput]:
    """The slides of ``--shard`` (all of them without one)."""
    if spec is None:
        return slides
    shard = parse_shard(spec)
    mine = select(slides, shard, key=lambda item: item.stem)
    log.info("shard %s: %d of %d slides", shard, len(mine), len(slides))
    return mine


def _output_folder(out_dir: str | Path) -> Path:
    """The output folder, created if need be."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    return out


def _to_segment(slides: list[SlideInput], out: Path, options: SegmentOptions, model_sha256: str,
                book: StatusBook, summary: RunSummary, events: RunEvents) -> list[Todo]:
    """The slides left to segment; unreadable, skipped and mismatched ones are reported."""
    todo: list[Todo] = []
    for item in slides:
        if item.error:
            _report(summary, events, SlideOutcome(str(item.path), "failed", item.error))
            book.finished(item, "failed", item.error)
            continue
        outputs = SlideOutputs(out, item.stem, options)
        try:
            provenance = slide_provenance(item, options, model_sha256)
        except (OSError, CerberusError) as exc:
            outcome = SlideOutcome(str(item.path), "failed", failure_message(item.path, exc))
            _report(summary, events, outcome)
            book.finished(item, "failed", outcome.message)
            continue
        # A first look without the claim: finished slides are skipped at once; the
        # answer is checked again under the claim (another runner may finish it meanwhile).
        existing = existing_outcome(item, outputs, provenance, options, model_sha256)
        if existing is not None:
            _report(summary, events, existing)
            continue
        todo.append((item, outputs, provenance))
    return todo


def _run_here(todo: list[Todo], loaded: LoadedModel, options: SegmentOptions, book: StatusBook,
              summary: RunSummary, events: RunEvents) -> None:
    """The slides one after another in this process."""
    with Segmenter(loaded, options) as segmenter:
        for item, outputs, provenance in todo:
            try:
                outcome = run_claimed(segmenter, item, outputs, events, provenance, book)
            except (KeyboardInterrupt, Terminated):
                _report(summary, events, SlideOutcome(
                    str(item.path), "interrupted", "stopped by a signal; nothing of this slide was kept"))
                raise
            _report(summary, events, outcome)
            if outcome.status == "failed" and options.fail_fast:
                break


def _run_on_workers(todo: list[Todo], out: Path, options: SegmentOptions, devices: list[str] | None,
                    model_sha256: str, summary: RunSummary, events: RunEvents) -> None:
    """The slides on Ray actors or one worker process per device; the summary in input order."""
    tasks = [(key, item, provenance) for key, (item, _, provenance) in enumerate(todo)]
    first = len(summary.slides)

    def report(outcome: SlideOutcome) -> None:
        _report(summary, events, outcome)

    if options.ray is not None:
        run_on_ray(tasks, out, options, model_sha256, events, report)
    else:
        run_on_devices(devices or [], tasks, out, options, model_sha256, events, report)
    # Outcomes arrive as workers finish; the summary lists them in input order.
    order = {str(item.path): key for key, (item, _, _) in enumerate(todo)}
    summary.slides[first:] = sorted(summary.slides[first:], key=lambda o: order.get(o.slide, 0))


def _report(summary: RunSummary, events: RunEvents, outcome: SlideOutcome) -> None:
    summary.slides.append(outcome)
    events.slide_finished(outcome)
