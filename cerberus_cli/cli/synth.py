"""``cerberus synth``: synthetic H&E phantoms with exact labels (tiles and slides)."""

from __future__ import annotations

import sys

import click


def _progress():
    """A transient progress bar on stderr, shown only on a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    return Progress(transient=True, console=Console(stderr=True), disable=not sys.stderr.isatty())


@click.group("synth")
def synth() -> None:
    """Generate phantom H&E colon tissue with exact labels for every task.

    \b
    Examples:
      cerberus synth tiles -o phantoms/ --count 200 --size 448 --seed 1
      cerberus synth slide phantom.svs --size 8192x8192 --seed 1 --mpp 0.25
    """


@synth.command("tiles")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Dataset folder to create.")
@click.option("--count", type=int, default=100, show_default=True, help="Tiles per task.")
@click.option("--size", type=int, default=448, show_default=True, help="Tile side in px (0.5 um/px).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option("--tasks", default="nuclei,gland,lumen,tissue", show_default=True,
              help="Comma-separated subset of nuclei, gland, lumen, tissue.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes rendering in parallel (output is identical).")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset folder.")
def tiles(out_dir: str, count: int, size: int, seed: int, tasks: str, workers: int,
          overwrite: bool) -> None:
    """Write a tile dataset (Lizard-, GlaS- and Kather-style folders).

    \b
    Example:
      cerberus synth tiles -o phantoms/ --count 200 --size 448 --seed 1
      cerberus synth tiles -o nuclei_only/ --tasks nuclei --count 50 --workers 2
    """
    from cerberus_cli.synthetic.dataset import write_tile_dataset

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    with _progress() as bar:
        job = bar.add_task("rendering tiles", total=None)
        meta = write_tile_dataset(out_dir, count=count, size=size, seed=seed, tasks=names,
                                  overwrite=overwrite, workers=workers,
                                  progress=lambda i, n: bar.update(job, completed=i, total=n))
    click.echo(f"wrote {meta['count']} tiles per task ({', '.join(meta['tasks'])}) to {out_dir}")


@synth.command("slide")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--size", default="8192x8192", show_default=True, help="WIDTHxHEIGHT in level-0 px.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option("--mpp", type=click.Choice(["0.5", "0.25"]), default="0.5", show_default=True,
              help="Level-0 resolution: 0.5 (20x) or 0.25 (40x).")
@click.option("--format", "fmt", type=click.Choice(["svs", "tiff"]), default=None,
              help="Aperio SVS or generic pyramidal TIFF [default: from the suffix].")
@click.option("--no-truth", is_flag=True, help="Write only the slide, no ground-truth files.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def slide(out: str, size: str, seed: int, mpp: str, fmt: str | None, no_truth: bool,
          overwrite: bool) -> None:
    """Write a pyramidal phantom slide and its exact ground truth.

    Next to OUT: OUT.truth.parquet and OUT.truth.geojson (every nucleus, gland,
    lumen and tissue region in level-0 px), OUT.tissue.png (tissue class per
    8 um cell) and OUT.truth.json (seed, size, mpp, counts).

    \b
    Examples:
      cerberus synth slide phantom.svs --size 8192x8192 --seed 1
      cerberus synth slide phantom40x.tiff --size 16384x12288 --mpp 0.25
    """
    from cerberus_cli.synthetic.slide import parse_size, write_slide

    width, height = parse_size(size)
    with _progress() as bar:
        job = bar.add_task("rendering slide", total=None)
        info = write_slide(out, (width, height), seed=seed, mpp=float(mpp), fmt=fmt,
                           overwrite=overwrite, truth=not no_truth,
                           progress=lambda i, n: bar.update(job, completed=i, total=n))
    click.echo(f"wrote {out} ({width}x{height} px at {mpp} um/px, {len(info['levels'])} levels) "
               f"in {info['seconds']:.1f} s")
