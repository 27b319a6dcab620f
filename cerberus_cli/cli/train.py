"""``cerberus train``: a thin wrapper over :func:`cerberus_cli.training.train`."""

from __future__ import annotations

from typing import Any

import click

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.training.options import TrainOptions


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
    result = run_training(options)
    click.echo(f"run: {result.run_dir}")
    click.echo(f"last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint is not None:
        click.echo(f"best checkpoint: {result.best_checkpoint} (score {result.best_score:.4f})")
        for k, v in sorted(result.best_metrics.items()):
            click.echo(f"  {k}: {v:.4f}")
    for k, v in sorted(result.samples_per_s.items()):
        click.echo(f"throughput {k}: {v:.1f} samples/s")
