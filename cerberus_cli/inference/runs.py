"""Many slides in one run: the model is loaded once, each slide succeeds or fails alone.

Outputs are written to temporary names and renamed when complete, and a slide
whose complete outputs exist is skipped, so a crashed run or a shell loop simply
runs again. One bad slide is reported and the run goes on (unless ``fail_fast``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.inference.inputs import SlideInput, collect_inputs
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.pipeline import Segmenter
from cerberus_cli.inference.slide_outputs import SlideOutputs
from cerberus_cli.model.registry import load_model

log = logging.getLogger(__name__)

Status = Literal["done", "skipped", "failed"]


@dataclass
class SlideOutcome:
    """The result of one slide in a run."""

    slide: str
    status: Status
    message: str = ""
    objects: int = 0
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class RunSummary:
    """All slides of a run; ``ok`` is False when any slide failed."""

    slides: list[SlideOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.slides)

    def count(self, status: Status) -> int:
        return sum(s.status == status for s in self.slides)


def segment(
    inputs: list[str],
    out_dir: str | Path,
    options: SegmentOptions = SegmentOptions(),
    manifest: str | None = None,
    slides_dir: str | None = None,
    console: Console | None = None,
) -> RunSummary:
    """Segment every slide in ``inputs`` (files, folders, globs) and ``manifest``.

    Per slide ``S`` the folder ``out_dir`` receives ``S.parquet`` (or
    ``S.geojson[.gz]``), ``S.tissue.zarr`` + ``S.tissue.png``, ``S.overlay.png``,
    optionally ``S.maps.zarr``, and last ``S.run.json``, whose presence marks the
    slide complete.
    """
    console = console or Console(stderr=True)
    slides = collect_inputs(inputs, manifest, slides_dir)
    if not slides:
        raise InputError("no slides given (pass slide files, folders, globs or --manifest)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    todo: list[tuple[SlideInput, SlideOutputs]] = []
    for item in slides:
        outputs = SlideOutputs(out, item.stem, options)
        if outputs.complete() and not options.overwrite:
            summary.slides.append(SlideOutcome(str(item.path), "skipped", "complete outputs exist"))
        else:
            todo.append((item, outputs))
    if todo:
        loaded = load_model(options.model)
        with Segmenter(loaded, options) as segmenter, _progress(console) as progress:
            run_task = progress.add_task("slides", total=len(todo), info="")
            for item, outputs in todo:
                outcome = _one(segmenter, item, outputs, progress)
                summary.slides.append(outcome)
                progress.advance(run_task)
                if outcome.status == "failed":
                    console.print(f"[red]failed[/red] {item.path}: {outcome.message}")
                    if options.fail_fast:
                        break
    _print_summary(console, summary)
    return summary


def _one(segmenter: Segmenter, item: SlideInput, outputs: SlideOutputs, progress: Progress) -> SlideOutcome:
    from cerberus_cli.slides import detect_tissue, load_mask, open_slide

    opts = segmenter.options
    t0 = time.perf_counter()
    task = progress.add_task(item.path.name, total=None, info="")

    def update(done: int, total: int, objects: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        progress.update(task, completed=done, total=total,
                        info=f"{rate:.1f} tiles/s, {objects:,} objects")

    try:
        with open_slide(item.path, backend=opts.backend, mpp=item.mpp or opts.mpp) as slide:
            t_mask = time.perf_counter()
            mask = load_mask(opts.mask, slide) if opts.mask else detect_tissue(slide)
            mask_s = time.perf_counter() - t_mask
            run = segmenter.run(slide, mask, outputs, update)
            run.timings["tissue_mask_s"] = mask_s
            written = outputs.write_record(item, slide, segmenter, run, time.perf_counter() - t0)
        return SlideOutcome(str(item.path), "done", objects=run.objects,
                            seconds=time.perf_counter() - t0, outputs=written)
    except CerberusError as exc:
        return SlideOutcome(str(item.path), "failed", str(exc), seconds=time.perf_counter() - t0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # one slide must not end a 600-slide run
        log.debug("slide %s failed", item.path, exc_info=True)
        return SlideOutcome(str(item.path), "failed", f"{type(exc).__name__}: {exc}",
                            seconds=time.perf_counter() - t0)
    finally:
        progress.remove_task(task)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal,
    )


def _print_summary(console: Console, summary: RunSummary) -> None:
    table = Table(title="cerberus segment", show_lines=False)
    for col in ("slide", "status", "objects", "seconds", "message"):
        table.add_column(col)
    style = {"done": "green", "skipped": "yellow", "failed": "red"}
    for s in summary.slides:
        table.add_row(Path(s.slide).name, f"[{style[s.status]}]{s.status}[/]",
                      f"{s.objects:,}" if s.status == "done" else "",
                      f"{s.seconds:.1f}" if s.status != "skipped" else "", s.message)
    console.print(table)
    console.print(f"{summary.count('done')} done, {summary.count('skipped')} skipped, "
                  f"{summary.count('failed')} failed")
