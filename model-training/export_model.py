"""Export a bundled model from its training runs and measure it on phantoms.

    python model-training/export_model.py VAL_DIR TEST_DIR RUN_DIR [RUN_DIR ...] \
        [--tissue-test DIR] [--name default] [--licence real] [--checkpoint last] \
        [--postprocess gland_threshold=0.5 ...]

The run directories are the training stages in order; the last run's checkpoint
(``--checkpoint last`` or ``best``) becomes ``models/NAME.pt`` with int8 storage and
the terms of ``--licence`` (``model-training/stamp_licence.py``) in its provenance and
the post-processing settings of ``--postprocess`` (chosen on training images, e.g. by
``gland_pp_sweep.py``) as its calibration (``ModelConfig.postprocess``).
That file is loaded back and evaluated on every tile of two held-out phantom sets:
VAL_DIR (the validation set of the phantom runs, which chose checkpoints) and
TEST_DIR (used for nothing else); the metrics go into the checkpoint's provenance and
``model-training/metrics.NAME.json``. Each stage's config,
metrics and plot are copied to ``model-training/<run name>/``. ``--tissue-test`` adds
the tissue accuracy on a larger tissue-only phantom set (27 patches resolve steps of
3.7%).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from stamp_licence import TERMS

from cerberus_cli.model.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from cerberus_cli.postprocess.options import PostprocessOptions
from cerberus_cli.training.validation import evaluate_phantom

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "models"


def _stage_record(run_dir: Path) -> dict:
    """What the model's provenance keeps of one stage: its options and where it started."""
    config = json.loads((run_dir / "config.json").read_text())
    opts = config.get("options", {})
    keep = ("init", "subtype", "tune_deepest", "anchor_weight", "tasks", "steps", "lr", "lr_drop_at",
            "batch_size", "tissue_batch_size", "patch", "tissue_patch", "sampler", "task_probs",
            "tissue_prob", "seed")
    return {"run": run_dir.name, **{k: opts.get(k) for k in keep}}


def _number(text: str) -> float:
    return int(text) if text.lstrip("-").isdigit() else float(text)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("val_dir", type=Path)
    p.add_argument("test_dir", type=Path)
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--tissue-test", type=Path, help="a 'cerberus synth tiles --tasks tissue' folder")
    p.add_argument("--name", default="default", help="registry name: models/NAME.pt and NAME.md")
    p.add_argument("--licence", choices=sorted(TERMS), default="real")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument("--postprocess", action="append", default=[], metavar="NAME=VALUE",
                   help="a post-processing setting the model is calibrated with (repeatable)")
    args = p.parse_args()
    src = args.run_dirs[-1] / "checkpoints" / f"{args.checkpoint}.pt"
    loaded = load_checkpoint(src)
    calibration = tuple(sorted((k, _number(v)) for k, v in (s.split("=", 1) for s in args.postprocess)))
    PostprocessOptions().for_model(calibration)  # names and values checked before any work
    loaded.model.config = replace(loaded.model.config, postprocess=calibration)
    training = loaded.provenance.get("training", {})
    what = ("real annotated H&E (MoNuSeg, CoNSeP, GlaS) and phantom tiles" if args.licence == "real"
            else "phantom H&E tiles; for demos and tests")
    provenance = {
        "description": f"Cerberus light (ResNet18, stem stride 2, six heads) trained on {what}; "
                       "not for diagnosis",
        "model_card": f"{args.name}.md",
        "licence": TERMS[args.licence],
        "stages": [_stage_record(r) for r in args.run_dirs],
        "training": {k: training.get(k) for k in ("step", "options", "init", "data")},
        "validation_during_training": training.get("validation"),
    }
    out = MODELS / f"{args.name}.pt"
    save_checkpoint(loaded.model, out, provenance, storage="int8")
    # The card's numbers are measured on the file as shipped (int8 weights).
    metrics = evaluate_phantom(out, args.val_dir)
    test_metrics = evaluate_phantom(out, args.test_dir)
    provenance["held_out_phantom_metrics"] = metrics
    provenance["test_phantom_metrics"] = test_metrics
    extra = {}
    if args.tissue_test:
        extra["tissue_test_phantom"] = evaluate_phantom(out, args.tissue_test)
        extra["tissue_test_dir"] = str(args.tissue_test)
        provenance["tissue_test_phantom_metrics"] = extra["tissue_test_phantom"]
    # Re-quantising dequantised int8 weights gives the same int8 weights back.
    save_checkpoint(load_checkpoint(out).model, out, provenance, storage="int8")
    (HERE / f"metrics.{args.name}.json").write_text(json.dumps(
        {"checkpoint": f"{args.run_dirs[-1].name} {args.checkpoint} (step {training.get('step')})",
         "val_dir": str(args.val_dir), "test_dir": str(args.test_dir), "storage": "int8",
         "sha256": file_sha256(out), "size_bytes": out.stat().st_size,
         "held_out_phantom": metrics, "test_phantom": test_metrics, **extra}, indent=2, sort_keys=True) + "\n")
    for run in args.run_dirs:
        dest = HERE / run.name
        if dest.resolve() == run.resolve():  # a stage recorded here already
            continue
        dest.mkdir(exist_ok=True)
        for name in ("config.json", "metrics.csv", "plot.png"):
            shutil.copy(run / name, dest / name)
    print(json.dumps({"validation": metrics, "test": test_metrics, **extra}, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
