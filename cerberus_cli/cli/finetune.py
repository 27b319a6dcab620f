"""``cerberus finetune``: a new classifier head on a transferred encoder."""

from __future__ import annotations

from typing import Any

import click

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.transfer.tuning_options import FinetuneOptions


@click.command("finetune")
@click.argument("table")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: report.json, epochs.csv, model.pt.")
@click_options(FinetuneOptions)
def finetune(table: str, out_dir: str, **values: Any) -> None:
    """Train a new head (linear, or the Cerberus multi-level patch head) on an encoder,
    frozen or in full, over a learning-rate grid and several seeds; the epoch and rate
    are chosen on the val split, the test split is scored once.

    TABLE is a patch table or image-folder tree with train, val (and test) splits.

    \b
    Examples:
      cerberus finetune signet/signet.csv -o ft/ --patch-px 64
      cerberus finetune signet/signet.csv -o ft/ --model runs/mtdp/checkpoints/best.pt \\
          --mode full --bn-adapt 20 --lr-grid 0.01,0.001 --seeds 3
    """
    from cerberus_cli.transfer.finetune import finetune as run_finetune

    options = build(FinetuneOptions, values)
    report = run_finetune(table, out_dir, options)
    for c in report["chosen"]:
        click.echo(f"seed {c['seed']}: lr {c['lr']:g}, epoch {c['epoch']}, "
                   f"val balanced accuracy {c['val_balanced_accuracy']:.4f}")
    parts = []
    for m in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        if m not in report:
            continue
        v, ci = report[m], report.get(f"{m}_ci")
        text = "-" if v is None else f"{v:.4f}"
        if ci:
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        parts.append(f"test {m} {text}")
    if parts:
        click.echo("; ".join(parts))
    click.echo(f"wrote {out_dir}/report.json, epochs.csv, model.pt")
