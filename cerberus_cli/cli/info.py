"""``cerberus info``: what is in a slide, and how much work segmenting it is."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.core.errors import CerberusError, ExitCode
from cerberus_cli.inference.describe import InfoOptions, slide_info


def _fmt_mpp(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _print_human(console: Console, info: dict[str, Any]) -> None:
    table = Table(title=info["path"], show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    power = info["objective_power"]
    table.add_row("vendor", str(info["vendor"]))
    table.add_row("backend", info["backend"])
    table.add_row("level-0 size", f"{info['width']:,} x {info['height']:,} px")
    table.add_row("mpp", f"{_fmt_mpp(info['mpp'])} um/px  ({info['mpp_source']})")
    table.add_row("objective power", "-" if power is None else f"{power:g}x")
    levels = "\n".join(
        f"{i}: {lv['width']:,} x {lv['height']:,}  (downsample {lv['downsample']:.4g})"
        for i, lv in enumerate(info["levels"])
    )
    table.add_row("levels", levels)
    table.add_row("associated images", ", ".join(info["associated_images"]) or "-")
    m = info["tissue_mask"]
    table.add_row("tissue fraction", f"{info['tissue_fraction']:.1%}  ({m['source']}, {m['mpp']:.3g} um/px)")
    for name, t in info["tiles"].items():
        table.add_row(f"tiles ({name})",
                      f"{t['count']:,} of {t['tile']} px + {t['margin']} px margin at {t['mpp']} um/px")
    console.print(table)


@click.command("info")
@click.argument("slides", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (one object per slide).")
@click_options(InfoOptions)
def info(slides: tuple[str, ...], as_json: bool, **values: Any) -> None:
    """Describe slides: vendor, reader, size, resolution, pyramid levels, associated
    images, tissue fraction and the number of tiles segmentation would process.

    A slide that cannot be read is reported as an error and the others are still
    described; the exit status is 1 if any slide failed.

    \b
    Examples:
      cerberus info slide.svs
      cerberus info *.svs --json > info.json
      cerberus info scan.png --mpp 0.5 --mask tissue.geojson
    """
    options = build(InfoOptions, values)
    console = Console()
    results: list[dict[str, Any]] = []
    failed = False
    for path in slides:
        try:
            result = slide_info(path, options)
        except CerberusError as exc:
            failed = True
            click.echo(f"error: {exc}", err=True)
            results.append({"path": path, "error": str(exc)})
            continue
        results.append(result)
        if not as_json:
            _print_human(console, result)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if failed:
        raise SystemExit(ExitCode.SOME_FAILED)
