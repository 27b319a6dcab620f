"""``cerberus synth``: synthetic H&E phantoms with exact labels (tiles and slides)."""

from __future__ import annotations

import sys
from typing import Any

import click

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.synthetic.nucleus_patches import SynthNucleiOptions
from cerberus_cli.synthetic.options import SynthSlideOptions, SynthTilesOptions
from cerberus_cli.synthetic.signet_options import SynthSignetOptions


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
@click_options(SynthTilesOptions)
def tiles(out_dir: str, **values: Any) -> None:
    """Write a tile dataset (Lizard-, GlaS- and Kather-style folders).

    \b
    Example:
      cerberus synth tiles -o phantoms/ --count 200 --size 448 --seed 1
      cerberus synth tiles -o nuclei_only/ --tasks nuclei --count 50 --workers 2
      cerberus synth tiles -o stroma/ --tasks nuclei --scene varied --count 200
    """
    from cerberus_cli.synthetic.dataset import write_tile_dataset

    o = build(SynthTilesOptions, values)
    with _progress() as bar:
        job = bar.add_task("rendering tiles", total=None)
        meta = write_tile_dataset(out_dir, count=o.count, size=o.size, seed=o.seed, tasks=o.tasks,
                                  overwrite=o.overwrite, workers=o.workers, scene=o.scene,
                                  progress=lambda i, n: bar.update(job, completed=i, total=n))
    click.echo(f"wrote {meta['count']} tiles per task ({', '.join(meta['tasks'])}) to {out_dir}")


@synth.command("slide")
@click.argument("out", type=click.Path(dir_okay=False))
@click_options(SynthSlideOptions)
def slide(out: str, **values: Any) -> None:
    """Write a pyramidal phantom slide and its exact ground truth.

    Next to OUT: OUT.truth.parquet and OUT.truth.geojson (every nucleus, gland,
    lumen and tissue region in level-0 px), OUT.tissue.png (tissue class per
    8 um cell) and OUT.truth.json (seed, size, mpp, counts).

    \b
    Examples:
      cerberus synth slide phantom.svs --size 8192x8192 --seed 1
      cerberus synth slide phantom40x.tiff --size 16384x12288 --mpp 0.25
    """
    from cerberus_cli.synthetic.slide import write_phantom_slide

    o = build(SynthSlideOptions, values)
    width, height = o.size
    with _progress() as bar:
        job = bar.add_task("rendering slide", total=None)
        info = write_phantom_slide(out, (width, height), seed=o.seed, mpp=float(o.mpp), fmt=o.format,
                           overwrite=o.overwrite, truth=o.truth,
                           progress=lambda i, n: bar.update(job, completed=i, total=n))
    click.echo(f"wrote {out} ({width}x{height} px at {o.mpp} um/px, {len(info['levels'])} levels) "
               f"in {info['seconds']:.1f} s")


@synth.command("signet")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Dataset folder to create (signet.csv + images/).")
@click_options(SynthSignetOptions)
def signet(out_dir: str, **values: Any) -> None:
    """Write the patch task "signet ring cell in the centre: yes/no".

    A signet ring cell is a large clear mucin vacuole pushing a crescent nucleus to the
    cell's edge; negatives are ordinary cells, empty vacuoles and off-centre signet
    ring cells. signet.csv has path, label, group (8 patches sharing one stain) and
    split (whole groups: train, val, test).

    \b
    Example:
      cerberus synth signet -o signet/ --count 400 --seed 1
      cerberus probe feats.parquet -o probe/   # after: cerberus features signet/signet.csv
    """
    from cerberus_cli.synthetic.signet import write_signet_dataset

    o = build(SynthSignetOptions, values)
    with _progress() as bar:
        job = bar.add_task("rendering patches", total=None)
        table = write_signet_dataset(out_dir, count=o.count, seed=o.seed, size=o.size,
                                     overwrite=o.overwrite,
                                     progress=lambda i, n: bar.update(job, completed=i, total=n))
    click.echo(f"wrote {o.count} patches and {table}")


@synth.command("nuclei")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Dataset folder to create (nuclei.csv + images/).")
@click_options(SynthNucleiOptions)
def nuclei(out_dir: str, **values: Any) -> None:
    """Write the patch task "type of the nucleus in the centre" (epithelial, lymphocyte,
    plasma, connective, ...), cut from phantom tiles around each typed nucleus.

    nuclei.csv has path, label, group (the patches of one tile) and split (whole groups).

    \b
    Example:
      cerberus synth nuclei -o nuclei/ --count 600 --seed 1
      cerberus pretrain -o runs/pre --data nuclei=nuclei/nuclei.csv --data signet=signet/signet.csv
    """
    from cerberus_cli.synthetic.nucleus_patches import write_nucleus_dataset

    o = build(SynthNucleiOptions, values)
    with _progress() as bar:
        job = bar.add_task("rendering patches", total=None)
        table = write_nucleus_dataset(out_dir, count=o.count, seed=o.seed, size=o.size,
                                      per_tile=o.per_tile, overwrite=o.overwrite,
                                      progress=lambda i, n: bar.update(job, completed=i, total=n))
    click.echo(f"wrote {table}")
