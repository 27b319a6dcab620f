"""``cerberus pretrain``: one encoder pre-trained on several patch tasks at once."""

from __future__ import annotations

from typing import Any

import click

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.transfer.tuning_options import PretrainOptions


@click.command("pretrain")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run directory (config, metrics, plot, checkpoints/last.pt and best.pt).")
@click_options(PretrainOptions)
def pretrain(output: str, **values: Any) -> None:
    """Multi-task pre-training (Mormont et al.): a shared encoder and one linear head per
    task, task-balanced batches, head gradients rescaled by B/|B_task|, SGD with momentum,
    a warm-up with the encoder frozen.

    The checkpoints are encoder-only Cerberus models: give them to 'cerberus features',
    'probe', 'finetune' or 'train --init'.

    \b
    Examples:
      cerberus pretrain -o runs/mtdp --data kather=NCT-CRC-HE-100K/ --data tcga=tcga.csv
      cerberus pretrain -o runs/mtdp --data all_tasks.csv --head-lr-mult 10 --arch resnet34
      cerberus pretrain -o runs/mtdp --resume --steps 60000
    """
    from cerberus_cli.transfer.pretrain import pretrain as run_pretrain

    options = build(PretrainOptions, values)

    def show(step: int, steps: int, record: dict[str, Any]) -> None:
        if record.get("kind") == "val":
            click.echo(f"step {step}/{steps} val score {record['val_score']:.4f}", err=True)
        else:
            click.echo(f"step {step}/{steps} loss {record['loss']:.4f}"
                       f"{' (warm-up)' if record.get('warmup') else ''}", err=True)

    result = run_pretrain(output, options, progress=show)
    click.echo(f"run: {result.run_dir}")
    click.echo(f"last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint is not None:
        click.echo(f"best checkpoint: {result.best_checkpoint} (val score {result.best_score:.4f})")
    for name, loss in sorted(result.last_losses.items()):
        first = result.first_losses.get(name, float("nan"))
        click.echo(f"  {name}: loss {first:.4f} -> {loss:.4f}")
    click.echo(f"throughput: {result.samples_per_s:.1f} samples/s")
