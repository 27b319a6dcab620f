"""The ``cerberus`` command: a click group whose subcommands live one per module.

Subcommands are imported lazily so that ``cerberus --help`` does not import torch.
Each subcommand is a thin wrapper over a library function: its options are generated
from the function's options dataclass (:mod:`.optgen`), and it only renders what the
function returns. ``-v``/``-q``, the exit-code table and SIGTERM are handled here once.

One module per subcommand (registered in ``COMMANDS``): segmentation :mod:`.segment`,
:mod:`.status`, :mod:`.info`, :mod:`.doctor`; models :mod:`.model_info` (``model``),
:mod:`.convert` (``convert-weights``); phantoms :mod:`.synth`; learning :mod:`.train`,
:mod:`.evaluate`, :mod:`.patches`, :mod:`.features`, :mod:`.probe`, :mod:`.pretrain`,
:mod:`.finetune`, :mod:`.export_encoder` (``export-encoder``).
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys

import click

from cerberus_cli import __version__
from cerberus_cli.core.errors import CerberusError, ExitCode, Terminated

# name -> "module:attribute"; one line per subcommand.
COMMANDS: dict[str, str] = {
    "convert-weights": "cerberus_cli.cli.convert:convert_weights",
    "doctor": "cerberus_cli.cli.doctor:doctor_command",
    "evaluate": "cerberus_cli.cli.evaluate:evaluate",
    "export-encoder": "cerberus_cli.cli.export_encoder:export_encoder",
    "features": "cerberus_cli.cli.features:features",
    "finetune": "cerberus_cli.cli.finetune:finetune",
    "info": "cerberus_cli.cli.info:info",
    "model": "cerberus_cli.cli.model_info:model_info",
    "patches": "cerberus_cli.cli.patches:patches",
    "pretrain": "cerberus_cli.cli.pretrain:pretrain",
    "probe": "cerberus_cli.cli.probe:probe",
    "train": "cerberus_cli.cli.train:train",
    "segment": "cerberus_cli.cli.segment:segment",
    "status": "cerberus_cli.cli.status:status",
    "synth": "cerberus_cli.cli.synth:synth",
}


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int | bool) -> None:
    """-v/-q may come before or after the subcommand: the last one given wins."""
    if not value:
        return
    state = ctx.find_root().meta.setdefault("cerberus.verbosity", {"verbose": 0, "quiet": False})
    state["quiet" if param.name == "quiet" else "verbose"] = value
    configure_logging(state["verbose"], state["quiet"])


def configure_logging(verbose: int, quiet: bool) -> None:
    """Our own log lines at INFO with -v, DEBUG with -vv; third-party loggers stay at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", force=True)
    ours = logging.WARNING if quiet or verbose == 0 else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.getLogger("cerberus_cli").setLevel(ours)


def is_quiet(ctx: click.Context) -> bool:
    """True when -q was given (before or after the subcommand)."""
    return bool(ctx.find_root().meta.get("cerberus.verbosity", {}).get("quiet"))


def _verbosity_options() -> list[click.Parameter]:
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, is_eager=True,
                     callback=_set_verbosity, help="Log our per-slide and per-stage lines (-vv: debug)."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True,
                     callback=_set_verbosity, help="Print only warnings and errors."),
    ]


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        if not any(p.name == "verbose" for p in command.params):
            command.params.extend(_verbosity_options())
        return command

    def invoke(self, ctx: click.Context) -> None:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            super().invoke(ctx)
        except CerberusError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(ExitCode.USAGE)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(ExitCode.INTERRUPTED)
        except Terminated:
            click.echo("terminated", err=True)
            sys.exit(ExitCode.TERMINATED)
        finally:
            signal.signal(signal.SIGTERM, previous)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cerberus")
@click.option("-v", "--verbose", count=True, expose_value=False, is_eager=True,
              callback=_set_verbosity, help="Log our per-slide and per-stage lines (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
              callback=_set_verbosity, help="Print only warnings and errors.")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Cerberus: one multi-task network for nuclei, glands, lumina and tissue type
    in H&E whole-slide images.

    \b
    Examples:
      cerberus segment slide.svs -o out/
      cerberus info slide.svs
      cerberus train --tasks gland,lumen,nuclei,tissue --data nuclei=DIR ...
      cerberus evaluate --metric pq --true GT/ --pred PRED/

    \b
    Exit status (every command):
      0  done      1  some inputs failed      2  usage or input error
      130  interrupted (Ctrl-C)      143  terminated (SIGTERM)
    """
    state = ctx.meta.get("cerberus.verbosity", {"verbose": 0, "quiet": False})
    configure_logging(state["verbose"], state["quiet"])
