"""``cerberus evaluate``: score predictions against ground truth with the metrics of the field."""

from __future__ import annotations

import math
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cerberus_cli.cli.optgen import build, click_options
from cerberus_cli.metrics.options import EvaluateOptions
from cerberus_cli.metrics.report import Report, report_paths


@click.command("evaluate")
@click.option("--true", "true", required=True, type=click.Path(exists=True),
              help="Ground truth: folder of label maps (or dataset root with instances/ and "
                   "classes/), one map file, slide object file(s), or for tissue a folder of "
                   "class folders / CSV.")
@click.option("--pred", "pred", required=True, type=click.Path(exists=True),
              help="Predictions: label maps or object files (a segment output folder, or one "
                   "file); object files against label maps are rasterised onto the maps and "
                   "paired by name (out/NAME.parquet <-> instances/NAME.png). Tissue: CSV with "
                   "image, class_id/prob_k.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False),
              help="Write the report: NAME.json and NAME.csv.")
@click.option("--overwrite", is_flag=True, help="Replace existing report files.")
@click_options(EvaluateOptions)
def evaluate(true: str, pred: str, out: str | None, overwrite: bool, **values: Any) -> None:
    """Compare predictions with ground truth: Dice, PQ (DQ, SQ), AJI, AJI+, mPQ, mPQ+,
    detection F1 and per-class F1, the GlaS gland metrics (object F1, object Dice,
    object Hausdorff); for tissue patches accuracy, mean F1, mAP and the confusion
    matrix.

    Predicted objects (segment's out/NAME.parquet) against label maps: the polygons
    are rasterised onto each truth map's pixels and scored as label maps. With
    --class-map the predicted classes are scored in the truth's classes (CoNSeP:
    --class-map consep; per-class rows then name CoNSeP's classes, and mpq_predictable
    averages over the classes a prediction can take).

    \b
    Examples:
      cerberus evaluate --task nuclei --true phantoms/ --pred preds/ -m pq -m mpq+
      cerberus segment consep_test/images --mpp 0.25 -o out/
      cerberus evaluate --true consep_test/ --pred out/ --class-map consep -m pq -m mpq
      cerberus evaluate --task gland --true gt/instances --true-classes gt/classes \\
          --pred out/instances --pred-classes out/classes -o gland_report.json
      cerberus evaluate --task gland --true glas/truth --pred glas/pred -m glas
      cerberus evaluate --task nuclei --true slide.truth.parquet --pred out/slide.parquet
      cerberus evaluate --task tissue --true kather_val/ --pred tissue_preds.csv -m all
    """
    from cerberus_cli.metrics.evaluate import evaluate as run_evaluation

    o = build(EvaluateOptions, values)
    if out:
        report_paths(out, overwrite)  # a bad report name fails before the computation
    report = run_evaluation(true, pred, metrics=list(o.metrics), task=o.task,
                            true_classes=o.true_classes, pred_classes=o.pred_classes,
                            threshold=o.iou_threshold, radius=o.radius,
                            allow_missing=o.allow_missing, class_map=o.class_map)
    written = report.write(out, overwrite=overwrite) if out else []
    print_report(report, Console())
    for path in written:
        click.echo(f"wrote {path}")


def _fmt(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.4f}"


def _count(v: float) -> str:
    return f"{v:,.0f}"


def print_report(report: Report, console: Console) -> None:
    """Rich tables: overall values with per-image mean/std, per class, confusion."""
    s = report.settings
    table = Table(title=f"{report.task}: {s.get('n_images', 0)} images")
    for col in ("metric", "value", "per-image mean", "per-image std", "images"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, value in report.overall.items():
        summary = report.image_summary(key)
        table.add_row(key, _fmt(value), _fmt(summary.mean), _fmt(summary.std),
                      str(summary.n) if summary.n else "-")
    console.print(table)
    if report.per_class:
        keys = list(dict.fromkeys(k for d in report.per_class.values() for k in d))
        ct = Table(title="per class")
        ct.add_column("class")
        for k in keys:
            ct.add_column(k, justify="right")
        for name, d in report.per_class.items():
            ct.add_row(name, *[_count(d[k]) if k.startswith(("n_", "area_")) else _fmt(d.get(k))
                               for k in keys])
        console.print(ct)
    if report.confusion is not None:
        names = [n for n in report.per_class]
        cm = Table(title="confusion (rows true, columns predicted)")
        cm.add_column("")
        for n in names:
            cm.add_column(n[:6], justify="right")
        for n, row in zip(names, report.confusion):
            cm.add_row(n, *map(_count, row))
        console.print(cm)
    unpaired = s.get("unpaired") or {}
    n_skip = len(unpaired.get("true_only", [])) + len(unpaired.get("pred_only", []))
    if n_skip:
        console.print(f"skipped {n_skip} unpaired file(s)")
    if s.get("n_both_empty"):
        console.print(f"{s['n_both_empty']} image(s) empty in truth and prediction: "
                      "undefined, left out of per-image means")
    if s.get("not_computed"):
        console.print(f"not computed: {s['not_computed']}")
    for line in class_map_notes(report):
        console.print(line)


def class_map_notes(report: Report) -> list[str]:
    """What a class map did: which truth class each predicted class counts as, and
    which truth classes no prediction can be."""
    cm = report.settings.get("class_map")
    if not cm:
        return []
    by_truth: dict[str, list[str]] = {}
    for pred, truth in cm["pred_to_truth"].items():
        by_truth.setdefault(truth, []).append(pred)
    lines = [f"class map {cm['name']}: predictions scored in the truth's classes ("
             + "; ".join(f"{', '.join(p)} -> {t}" for t, p in by_truth.items()) + ")"]
    for name in cm["unpredictable"]:
        n = report.per_class.get(name, {}).get("n_true")
        held = (f"the truth holds {n:,}" if n else "absent from the truth here") \
            if n is not None else "as the truth holds it"
        lines.append(f"no predicted class maps to {name} ({held}): it scores PQ 0 wherever the "
                     "truth holds it, counted in mpq and mpq+; mpq_predictable and "
                     "mpq+_predictable average over " + ", ".join(cm["predictable"]) + " only")
    if cm["unmapped_pred"]:
        lines.append("predicted classes in no truth class (scored unclassified): "
                     + ", ".join(cm["unmapped_pred"]))
    return lines
