"""``cerberus convert-weights``."""

import click

from cerberus_cli.model.convert import convert_weights as _convert


@click.command("convert-weights")
@click.argument("source", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def convert_weights(source: str, output: str, overwrite: bool) -> None:
    """Convert an original Cerberus release checkpoint to the cerberus-cli format.

    The original file (a torch.save dict whose 'desc' holds the state dict) is
    checked key by key: any missing, unexpected or mis-shaped weight is refused.

    \b
    Example:
      cerberus convert-weights resnet34_cerberus.tar -o cerberus-reference.pt
    """
    path = _convert(source, output, overwrite=overwrite)
    click.echo(f"wrote {path}")
