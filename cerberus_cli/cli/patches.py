"""``cerberus patches``: real patch tasks (a patch table + images) from annotated instance layouts."""

from __future__ import annotations

import sys

import click

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.transfer.patch_tasks import PatchesOptions


@click.command("patches")
@click.argument("sources", nargs=-1, required=True, metavar="[SPLIT=]DIR...")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: patches.csv (the patch table), patches.json, patches/.")
@click_options(PatchesOptions)
def patches(sources: tuple[str, ...], out_dir: str, **kwargs: object) -> None:
    """Cut a patch task from folders in the instance layout (images/, instances/,
    classes/, dataset.json) and write its patch table for 'cerberus features'.

    Each DIR may carry its split (train, val or test) as SPLIT=DIR; a bare DIR is
    train. nuclei-type: a patch per nucleus, label = its majority class, group = its
    image. gland-grade: a patch per gland, label = the image's grade, group = the
    patient (both from grade.csv). organ: a grid of patches per image, label = its organ
    (organs.csv or --organs), group = the image. Patches are at --mpp (0.5 um/px).

    \b
    Examples:
      cerberus patches train=nuclei-consep-train test=nuclei-consep-test -o consep-types/
      cerberus patches train=gland-glas-train test=gland-glas-testA --kind gland-grade -o glas/
      cerberus patches nuclei-monuseg-train --kind organ --organs organs.csv -o organs/
      cerberus features consep-types/patches.csv -o consep.parquet
      cerberus probe consep.parquet -o probe/
    """
    from rich.console import Console
    from rich.progress import Progress

    from cerberus_cli.transfer.patch_tasks import make_patches

    options = build(PatchesOptions, kwargs)
    # On stderr and only on a terminal: stdout keeps the summary, errors stay one line.
    with Progress(transient=True, console=Console(stderr=True), disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("patches", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = make_patches(list(sources), out_dir, options, progress)
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    for reason, n in summary.skipped.items():
        click.echo(f"skipped {n} ({reason})", err=True)
    for split, counts in summary.counts.items():
        parts = ", ".join(f"{label} {n}" for label, n in counts.items())
        click.echo(f"  {split}: {parts}")
    click.echo(f"wrote {summary.table} ({summary.rows} patches from {summary.images} images)")
