"""``cerberus model``: describe a model (registry name or checkpoint file)."""

import json

import click
from rich.console import Console
from rich.table import Table

from cerberus_cli.model.describe import describe_model
from cerberus_cli.model.registry import available_models
from cerberus_cli.postprocess.options import describe_calibration


@click.command("model")
@click.argument("spec", required=False)
@click.option("--list", "list_models", is_flag=True, help="List the installed registry models.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def model_info(spec: str | None, list_models: bool, as_json: bool) -> None:
    """Show a model's heads, classes, resolution, tile geometry and provenance.

    SPEC is a registry name (default: the bundled model), a cerberus-cli checkpoint
    or an original Cerberus release checkpoint.

    \b
    Examples:
      cerberus model
      cerberus model --list
      cerberus model cerberus-reference.pt --json
    """
    if list_models:
        models = {k: str(v) for k, v in available_models().items()}
        if as_json:
            click.echo(json.dumps(models, indent=2))
        else:
            for name, path in models.items():
                click.echo(f"{name}\t{path}")
        return
    info = describe_model(spec)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    console = Console()
    table = Table(title=f"{info['name']}  ({info['source']})", show_header=True)
    table.add_column("head")
    table.add_column("kind")
    table.add_column("classes")
    for h in info["config"]["heads"]:
        table.add_row(h["name"], h["kind"], ", ".join(c["name"] for c in h["classes"]))
    console.print(table)
    cfg = info["config"]
    console.print(
        f"encoder {cfg['encoder']} (stem stride {cfg['stem_stride']}), {info['parameters']:,} parameters, "
        f"{cfg['mpp']} um/px"
    )
    console.print(f"sha256 {info['sha256']}")
    console.print(f"weights licence: {info['licence']}")
    calibration = cfg.get("postprocess", {})
    console.print("post-processing calibration: " + (
        describe_calibration(calibration.items()) if calibration
        else "none (the reference settings)"))
    if info["provenance"]:
        console.print(f"provenance: {json.dumps(info['provenance'])}")
