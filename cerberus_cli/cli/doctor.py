"""``cerberus doctor``: versions, devices, slide readers and the output folder, for bug reports."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.cohort.doctor import DoctorOptions, doctor
from cerberus_cli.core.errors import ExitCode


def _rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    torch = report["torch"]
    slides = report["slides"]
    rows = [("cerberus", report["cerberus"]), ("python", report["python"]),
            ("platform", report["platform"]),
            ("cpus", f"{report['cpu']['usable']} usable of {report['cpu']['count']}"),
            ("torch", f"{torch['version']} (CUDA build {torch.get('cuda_build') or 'none'}, "
                      f"cuDNN {torch.get('cudnn') or '-'}, {torch.get('threads')} threads)")]
    if not report["cuda"]:
        rows.append(("CUDA devices", "none"))
    for dev in report["cuda"]:
        free = "?" if dev["free_mib"] is None else f"{dev['free_mib']:,}"
        rows.append((dev["device"], f"{dev['name']} (sm {dev['capability']}), "
                                    f"{free} / {dev['total_mib']:,} MiB free"))
    rows.append(("OpenSlide", f"library {slides['openslide_library'] or 'not found'}, "
                              f"openslide-python {slides['openslide_python'] or '-'}"))
    rows.append(("tiffslide", slides["tiffslide"] or "not installed"))
    for name in ("numpy", "zarr", "shapely", "pyarrow", "geopandas"):
        if name in report["versions"]:
            rows.append((name, report["versions"][name]))
    if "output" in report:
        out = report["output"]
        state = "writable" if out["writable"] else "NOT writable"
        made = "" if out["exists"] else " (will be created)"
        free = "?" if out["free_gib"] is None else f"{out['free_gib']:,} GiB free"
        rows.append(("output", f"{out['path']}{made}: {state}, {free}"))
    return rows


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click_options(DoctorOptions)
def doctor_command(as_json: bool, **values: Any) -> None:
    """Report versions, CUDA devices and their memory, the OpenSlide library and,
    with -o, free space and write access of an output folder. Paste it into bug
    reports. The exit status is 1 when something would stop a run.

    \b
    Examples:
      cerberus doctor
      cerberus doctor -o /scratch/out --json
    """
    report = doctor(build(DoctorOptions, values))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        console = Console()
        table = Table(title="cerberus doctor", show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("value")
        for name, value in _rows(report):
            table.add_row(name, value)
        console.print(table)
        for problem in report["problems"]:
            console.print(f"[red]problem[/red] {problem}", highlight=False)
    if report["problems"]:
        sys.exit(ExitCode.SOME_FAILED)
