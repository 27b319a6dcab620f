"""``cerberus train``: a thin wrapper over :func:`cerberus_cli.training.train`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cerberus_cli.cli import is_quiet
from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.training.options import TrainOptions


@contextmanager
def _bar(show: bool) -> Iterator[Callable[[int, int, float], None] | None]:
    """A rich progress bar on a terminal (stderr), fed by the trainer's progress callback."""
    console = Console(stderr=True)
    if not show or not console.is_terminal:
        yield None
        return
    bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), console=console)
    task = bar.add_task("train", total=None, info="")

    def update(done: int, total: int, loss: float) -> None:
        bar.update(task, completed=done, total=total, info="" if math.isnan(loss) else f"loss {loss:.3f}")

    with bar:
        yield update


@click.command("train")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run directory (config, metrics, checkpoints, plot).")
@click_options(TrainOptions)
def train(output: str, **values: Any) -> None:
    """Train a Cerberus model on nuclei, gland, lumen and tissue-type datasets at once.

    \b
    Examples:
      cerberus synth tiles -o phantom/ --count 200
      cerberus train -o runs/demo --data phantom/ --arch light --steps 2000
      cerberus train -o runs/crc --data nuclei=Lizard/ --data gland=GlaS/ \\
          --data lumen:generic=lumen/ --data tissue=NCT-CRC-HE-100K/ \\
          --init imagenet --imagenet-weights resnet34-b627a593.pth
      cerberus train -o runs/crc --resume --steps 40000
      cerberus train -o runs/types --subtype nuclei --init runs/crc/checkpoints/best.pt \\
          --data nuclei=Lizard/
      cerberus train -o runs/tissue --subtype tissue --tune-deepest --init runs/crc/checkpoints/best.pt \\
          --data tissue=NCT-CRC-HE-100K/ --data gland=GlaS/ --tissue-prob 0.5
    """
    from cerberus_cli.training import train as run_training

    options = build(TrainOptions, values, output=output)
    with _bar(options.progress and not is_quiet(click.get_current_context())) as progress:
        result = run_training(options, progress)
    click.echo(f"run: {result.run_dir}")
    click.echo(f"last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint is not None:
        click.echo(f"best checkpoint: {result.best_checkpoint} (score {result.best_score:.4f})")
        for k, v in sorted(result.best_metrics.items()):
            click.echo(f"  {k}: {v:.4f}")
    for k, v in sorted(result.samples_per_s.items()):
        click.echo(f"throughput {k}: {v:.1f} samples/s")
