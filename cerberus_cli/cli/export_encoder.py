"""``cerberus export-encoder``: a model's encoder in torchvision key layout + JSON sidecar."""

from __future__ import annotations

import click

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.transfer.options import ExportOptions


@click.command("export-encoder")
@click.argument("model", required=False)
@click.option("-o", "--out", "output", required=True, type=click.Path(dir_okay=False),
              help="Encoder file (.pt); the sidecar goes beside it as .json.")
@click_options(ExportOptions)
def export_encoder(model: str | None, output: str, **kwargs) -> None:
    """Write MODEL's encoder as a torchvision ResNet state dict (conv1.weight,
    layer1.0.conv1.weight, ...; no fc) with a JSON sidecar giving the stem stride,
    input normalisation and mpp, e.g. as the backbone of a RetinaNet or FPN detector.
    MODEL is a registry name, checkpoint file (e.g. of pretrain or finetune), torchvision
    ResNet18/34/50 state dict or multitask-dipath release checkpoint (ResNet)
    [default: the bundled model].

    \b
    Examples:
      cerberus export-encoder -o encoder.pt
      cerberus export-encoder runs/crc/checkpoints/best.pt -o crc_encoder.pt
      cerberus features kather/ --model encoder.pt -o feats.parquet   # reuse it here
    """
    from cerberus_cli.transfer.export import export_encoder as run_export

    weights, sidecar = run_export(model, output, build(ExportOptions, kwargs))
    click.echo(f"wrote {weights} and {sidecar}")
