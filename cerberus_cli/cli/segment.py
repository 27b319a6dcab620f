"""``cerberus segment``: whole-slide multi-task inference."""

import sys

import click

from cerberus_cli.inference.tiles import DEFAULT_MARGIN, DEFAULT_TILE, REFERENCE_TILE


@click.command("segment")
@click.argument("slides", nargs=-1)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (created if needed).")
@click.option("--model", default=None, help="Registry name, cerberus-cli checkpoint or original "
              "release checkpoint [default: the bundled model].")
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="GDC manifest (id, filename columns) or CSV with path[,mpp].")
@click.option("--slides-dir", type=click.Path(file_okay=False),
              help="Folder where manifest file names are found.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "geojson"]), default="parquet",
              show_default=True, help="Object file format.")
@click.option("--gzip", is_flag=True, help="Gzip the GeoJSON output.")
@click.option("--tile", type=int, default=DEFAULT_TILE, show_default=True,
              help=f"Kept output side in px at the model resolution; {REFERENCE_TILE} is the "
                   "reference geometry (448 in / 144 out).")
@click.option("--margin", type=int, default=DEFAULT_MARGIN, show_default=True,
              help="Context around each kept tile, px.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
              show_default=True, help="auto: fp16 autocast on CUDA, fp32 on CPU.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the network.")
@click.option("--workers", type=int, default=2, show_default=True, help="Tile reader processes.")
@click.option("--post-workers", type=int, default=2, show_default=True,
              help="Post-processing processes.")
@click.option("--chunk", type=int, default=2048, show_default=True,
              help="Post-processing chunk side, px at the model resolution.")
@click.option("--backend", type=click.Choice(["auto", "openslide", "tiffslide"]), default="auto",
              show_default=True)
@click.option("--mpp", type=float, help="Level-0 um/px, for slides that do not record it.")
@click.option("--mask", type=click.Path(dir_okay=False),
              help="Tissue mask (PNG/TIFF or GeoJSON) instead of automatic detection.")
@click.option("--tissue-polygons", is_flag=True, help="Also write tissue-type regions as polygons.")
@click.option("--save-maps", is_flag=True, help="Keep the probability maps as a multiscale zarr.")
@click.option("--overlay/--no-overlay", default=True, show_default=True, help="QC overlay PNG.")
@click.option("--overwrite", is_flag=True, help="Redo slides whose outputs exist.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed slide.")
def segment(slides, out_dir, model, manifest, slides_dir, fmt, gzip, tile, margin, batch_size,
            device, precision, channels_last, compile_, workers, post_workers, chunk, backend, mpp,
            mask, tissue_polygons, save_maps, overlay, overwrite, fail_fast) -> None:
    """Find nuclei (typed), glands (typed), lumina and tissue types in whole slides.

    SLIDES are slide files, folders (searched recursively) or glob patterns.
    Slides whose complete outputs exist in OUT are skipped, so an interrupted run
    simply runs again. The exit status is 1 if any slide failed.

    \b
    Examples:
      cerberus segment slide.svs -o out/
      cerberus segment slides/ "more/*.ndpi" -o out/ --format geojson --gzip
      cerberus segment --manifest gdc_manifest.txt --slides-dir gdc/ -o out/ --device cuda
    """
    from cerberus_cli.inference.options import SegmentOptions
    from cerberus_cli.inference.runs import segment as run_segment

    try:
        options = SegmentOptions(
            model=model, tile=tile, margin=margin, batch_size=batch_size, device=device,
            precision=precision, channels_last=channels_last, compile=compile_, workers=workers,
            post_workers=post_workers, chunk=chunk, backend=backend, mpp=mpp, mask=mask, format=fmt,
            gzip=gzip, tissue_polygons=tissue_polygons, save_maps=save_maps, overlay=overlay,
            overwrite=overwrite, fail_fast=fail_fast,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    summary = run_segment(list(slides), out_dir, options, manifest=manifest, slides_dir=slides_dir)
    if not summary.ok:
        sys.exit(1)
