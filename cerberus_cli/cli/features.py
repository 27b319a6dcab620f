"""``cerberus features``: frozen-encoder features of patches, slide grids or segmented objects."""

from __future__ import annotations

import click

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.transfer.options import FeaturesOptions


@click.command("features")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "output", required=True, type=click.Path(),
              help="Feature file (patches) or folder of SLIDE.features.parquet (grid, objects).")
@click_options(FeaturesOptions)
def features(inputs: tuple[str, ...], output: str, **kwargs) -> None:
    """Pooled encoder features, one Parquet row per sample, with provenance metadata.

    INPUTS is a patch table (CSV, TSV or Parquet with path or slide/x/y, label, group,
    split) or an image-folder tree (ROOT/CLASS/*.png or ROOT/SPLIT/CLASS/*.png), or,
    with --kind grid / objects, slide files.

    \b
    Examples:
      cerberus features patches.csv -o feats.parquet --layers layer3,layer4,bridge
      cerberus features kather/ -o kather.parquet --pooling avgmax --patch-um 112
      cerberus features s1.svs s2.svs --kind grid --patch-um 112 -o grid_feats/
      cerberus features s1.svs --kind objects --objects out/s1.parquet --tasks nuclei -o obj/
      cerberus features kather/ -o random.parquet --random-init 0     # baseline
    """
    from rich.progress import Progress

    from cerberus_cli.transfer.extract import features as run_features

    options = build(FeaturesOptions, kwargs)
    with Progress(transient=True) as bar:
        task = bar.add_task("features", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = run_features(list(inputs), output, options, progress)
    for path in summary.written:
        click.echo(f"wrote {path} ({summary.rows} rows x {summary.dim} features)")
    for path in summary.skipped:
        click.echo(f"skipped {path} (features with the same provenance exist)")
