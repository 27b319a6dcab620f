"""``cerberus probe``: how well frozen features transfer, by a linear probe with grouped CV."""

from __future__ import annotations

import click

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.transfer.options import ProbeOptions


@click.command("probe")
@click.argument("features", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: report.json, report.csv, probe.skops, probe.json "
                   "(with --predict: predictions.parquet).")
@click_options(ProbeOptions)
def probe(features: tuple[str, ...], out_dir: str, **kwargs) -> None:
    """Fit a standardised linear SVM / logistic regression (and a kNN baseline) on
    feature files from 'cerberus features' and report test accuracy, balanced accuracy,
    macro F1 and ROC AUC with group-bootstrap intervals.

    C is chosen by stratified group k-fold on the training part only; the test split
    (or, without one, an outer grouped CV) is never used for selection.

    \b
    Examples:
      cerberus probe feats.parquet -o probe/
      cerberus probe train.parquet test.parquet -o probe/ --classifier logreg --seeds 5
      cerberus probe bundled.parquet random.parquet --compare -o compare/
      cerberus probe new.parquet --predict probe/ -o preds/
    """
    from cerberus_cli.transfer.probe import probe as run_probe

    options = build(ProbeOptions, kwargs)
    report = run_probe(list(features), out_dir, options)
    if options.predict is not None:
        click.echo(f"wrote {report['predictions']} ({report['rows']} rows)")
        return
    for warning in report.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    parts = []
    for m in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        v, ci = report.get(m), report.get(f"{m}_ci")
        text = "-" if v is None else f"{v:.4f}"
        if ci:
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        parts.append(f"{m} {text}")
    click.echo("; ".join(parts))
    if "mean_rank" in report:
        for name, rank in sorted(report["mean_rank"].items(), key=lambda kv: kv[1]):
            click.echo(f"  mean rank {rank:.2f}  {name}")
    click.echo(f"wrote {out_dir}/report.json, report.csv")
