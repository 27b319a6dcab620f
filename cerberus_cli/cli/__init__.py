"""The ``cerberus`` command: a click group whose subcommands live one per module.

Subcommands are imported lazily so that ``cerberus --help`` does not import torch.
Each subcommand is a thin wrapper over a library function.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from cerberus_cli import __version__
from cerberus_cli.core.errors import CerberusError

# name -> "module:attribute"; one line per subcommand.
COMMANDS: dict[str, str] = {
    "convert-weights": "cerberus_cli.cli.convert:convert_weights",
    "evaluate": "cerberus_cli.cli.evaluate:evaluate",
    "info": "cerberus_cli.cli.info:info",
    "model": "cerberus_cli.cli.model_info:model_info",
    "train": "cerberus_cli.cli.train:train",
    "segment": "cerberus_cli.cli.segment:segment",
    "synth": "cerberus_cli.cli.synth:synth",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CerberusError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cerberus")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """Cerberus: one multi-task network for nuclei, glands, lumina and tissue type
    in H&E whole-slide images.

    \b
    Examples:
      cerberus segment slide.svs -o out/
      cerberus info slide.svs
      cerberus train --tasks gland,lumen,nuclei,tissue --data nuclei=DIR ...
      cerberus evaluate --metric pq --true GT/ --pred PRED/
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", force=True)
