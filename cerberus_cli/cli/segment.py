"""``cerberus segment``: whole-slide multi-task inference.

The options are generated from :class:`~cerberus_cli.inference.options.SegmentOptions`;
this module only renders progress and the summary.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cerberus_cli.cli import is_quiet
from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.cohort.outcomes import RunEvents, RunSummary, SlideOutcome
from cerberus_cli.core.errors import ExitCode
from cerberus_cli.core.optionspec import spec_of
from cerberus_cli.inference.options import SegmentOptions

_RAY = spec_of(next(f for f in dataclasses.fields(SegmentOptions) if f.name == "ray"))
assert _RAY is not None


class _RichEvents(RunEvents):
    """Progress bars on a terminal (one per slide at work); failures printed once as they happen."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
            console=console, disable=quiet or not console.is_terminal,
        )
        self._run: Any = None
        #: slide path -> (progress task, start time); several at once with --devices / --ray
        self._slides: dict[str, tuple[Any, float]] = {}

    def run_started(self, slides: int) -> None:
        self.progress.start()
        self._run = self.progress.add_task("slides", total=slides, info="")

    def slide_started(self, slide: Any) -> None:
        task = self.progress.add_task(slide.path.name, total=None, info="")
        self._slides[str(slide.path)] = (task, time.perf_counter())

    def slide_tiles(self, slide: Any, done: int, total: int, objects: int) -> None:
        entry = self._slides.get(str(slide.path))
        if entry is None:
            return
        task, t0 = entry
        rate = done / max(time.perf_counter() - t0, 1e-9)
        self.progress.update(task, completed=done, total=total,
                             info=f"{rate:.1f} tiles/s, {objects:,} objects")

    def slide_finished(self, outcome: SlideOutcome) -> None:
        entry = self._slides.pop(outcome.slide, None)
        if entry is not None:
            self.progress.remove_task(entry[0])
        if self._run is not None and outcome.status != "skipped":
            self.progress.advance(self._run)
        if outcome.status in ("failed", "interrupted"):
            # Messages name their file; the slide is added only where the message does not.
            where = "" if outcome.slide in outcome.message else f"{outcome.slide}: "
            self.console.print(f"[red]{outcome.status}[/red] {where}{outcome.message}",
                               highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()


def _print_summary(console: Console, summary: RunSummary) -> None:
    table = Table(title="cerberus segment", show_lines=False)
    for col in ("slide", "status", "objects", "seconds", "message"):
        table.add_column(col)
    style = {"done": "green", "done with damage": "yellow", "skipped": "yellow",
             "running elsewhere": "cyan", "failed": "red", "interrupted": "red"}
    for s in summary.slides:
        table.add_row(Path(s.slide).name, f"[{style[s.status]}]{s.status}[/]",
                      f"{s.objects:,}" if s.status.startswith("done") else "",
                      f"{s.seconds:.1f}" if s.status not in ("skipped", "running elsewhere") else "",
                      s.message)
    console.print(table)
    damaged = summary.count("done with damage")
    elsewhere = summary.count("running elsewhere")
    console.print(f"{summary.count('done')} done, {summary.count('skipped')} skipped, "
                  f"{summary.count('failed')} failed" + (f", {damaged} done with damage" if damaged else "")
                  + (f", {elsewhere} running elsewhere" if elsewhere else ""))


@click.command("segment")
@click.argument("slides", nargs=-1)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (created if needed) [required, except with --rerun: the "
                   "record's folder].")
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="GDC manifest (id, filename columns) or CSV with path[,mpp].")
@click.option("--slides-dir", type=click.Path(file_okay=False),
              help="Folder where manifest file names are found.")
@click.option("--rerun", type=click.Path(dir_okay=False),
              help="Re-run the slide of a commit record S.run.json with its recorded options "
                   "(checked: same slide, mask and model); speed options may be given anew.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@click_options(SegmentOptions)
# Plain --ray means auto (a value is optional, so the field is declared by hand here).
@click.option("--ray", "ray", is_flag=False, flag_value="auto", default=None,
              metavar=_RAY.metavar, help=_RAY.help)
@click.pass_context
def segment(ctx: click.Context, slides: tuple[str, ...], out_dir: str | None,
            manifest: str | None, slides_dir: str | None, rerun: str | None, as_json: bool,
            ray: str | None, **values: Any) -> None:
    """Find nuclei (typed), glands (typed), lumina and tissue types in whole slides.

    SLIDES are slide files, folders (searched recursively) or glob patterns.
    Slides whose complete outputs exist in OUT are skipped, so an interrupted run
    simply runs again. The exit status is 1 if any slide failed. Several runners
    may share OUT: each slide is claimed by one of them (others skip it as
    running elsewhere); --shard splits the inputs between runners beforehand.

    \b
    Examples:
      cerberus segment slide.svs -o out/
      cerberus segment slides/ "more/*.ndpi" -o out/ --format geojson --gzip
      cerberus segment --manifest gdc_manifest.txt --slides-dir gdc/ -o out/ --device cuda
      cerberus segment slide.svs -o out/ --nuclei-threshold 0.6 --json
      cerberus segment slides/ -o out/ --shard slurm --status   # one Slurm array task
      cerberus segment slides/ -o out/ --devices cuda:0,cuda:1  # one worker per GPU
      cerberus segment slides/ -o /shared/out/ --ray            # actors on a Ray cluster
      cerberus segment --rerun out/slide.run.json -o again/ --device cuda
    """
    from cerberus_cli.cohort.runs import segment as run_segment

    if rerun is not None:
        from cerberus_cli.cohort.rerun import options_from_record

        if slides or manifest or slides_dir:
            raise click.UsageError("--rerun takes its slide from the record: give no SLIDES, "
                                   "--manifest or --slides-dir")
        given = {name: value for name, value in values.items()
                 if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                       ParameterSource.ENVIRONMENT)}
        if ray is not None:
            given["ray"] = ray
        slide, options = options_from_record(rerun, given)
        slides = (str(slide),)
        out_dir = out_dir or str(Path(rerun).parent)
    else:
        if out_dir is None:
            raise click.UsageError("Missing option '-o' / '--out'.")
        options = build(SegmentOptions, values, ray=ray)
    quiet = is_quiet(ctx)
    console = Console(stderr=True)
    events = _RichEvents(console, quiet)
    try:
        summary = run_segment(list(slides), out_dir, options, manifest=manifest,
                              slides_dir=slides_dir, events=events)
    finally:
        events.close()
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    elif not quiet:
        _print_summary(console, summary)
    if not summary.ok:
        sys.exit(ExitCode.SOME_FAILED)
