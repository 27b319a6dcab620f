"""``cerberus status``: where a cohort stands in one output folder."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cerberus_cli.cli import is_quiet
from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.cohort.status import STATES, CohortStatus, StatusOptions, cohort_status
from cerberus_cli.core.errors import ExitCode

_STYLE = {"done": "green", "failed": "red", "running": "cyan", "stale": "yellow", "pending": ""}


def _when(seconds: float | None) -> str:
    return "" if seconds is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _print_human(console: Console, status: CohortStatus) -> None:
    table = Table(title=f"cerberus status {status.folder}", title_justify="left")
    for col in ("slide", "state", "attempts", "host", "pid", "started", "seconds", "objects",
                "message"):
        table.add_column(col)
    for s in status.slides:
        style = _STYLE[s.state]
        table.add_row(s.slide, f"[{style}]{s.state}[/]" if style else s.state,
                      str(s.attempts or ""), s.host or "", str(s.pid or ""), _when(s.start),
                      "" if s.duration_s is None else f"{s.duration_s:.1f}",
                      "" if s.objects is None else f"{s.objects:,}", s.message)
    console.print(table)
    console.print(", ".join(f"{status.count(state)} {state}" for state in STATES))


@click.command("status")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
@click_options(StatusOptions)
def status(out_dir: str, as_json: bool, **values: Any) -> None:
    """Summarise a segmentation output folder: slides done, failed (with their
    errors), running (a live claim), stale (started, runner gone) and pending
    (in --manifest, not started). Per-slide details come from OUT/_status/,
    written by 'cerberus segment --status'.

    The exit status is 0 when every slide is done, 1 otherwise, so a script can
    wait for a cohort or decide to run it again.

    \b
    Examples:
      cerberus status out/
      cerberus status out/ --manifest gdc_manifest.txt --json
      until cerberus status out/ -q --manifest slides.csv; do sleep 600; done
    """
    options = build(StatusOptions, values)
    result = cohort_status(out_dir, options)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif not is_quiet(click.get_current_context()):
        _print_human(Console(), result)
    if not result.complete:
        sys.exit(ExitCode.SOME_FAILED)
