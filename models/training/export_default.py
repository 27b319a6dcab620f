"""Export the bundled default model from a training run and measure it.

    python models/training/export_default.py RUN_DIR VAL_PHANTOM_DIR [--checkpoint best|last]

Saves the run's checkpoint as ``models/default.pt`` with int8 storage, loads that
file back and evaluates it on every held-out phantom tile; the metrics go into the
checkpoint's provenance and ``models/training/metrics.json``. Copies the run's
config and metrics next to this script.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from cerberus_cli.model.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from cerberus_cli.training.validation import evaluate_phantom

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("val_dir", type=Path)
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    args = p.parse_args()
    src = args.run_dir / "checkpoints" / f"{args.checkpoint}.pt"
    loaded = load_checkpoint(src)
    training = loaded.provenance.get("training", {})
    provenance = {
        "description": "Cerberus light (ResNet18, stem stride 2, six heads) trained on phantom "
                       "H&E tiles; for demos and tests, not for diagnosis",
        "model_card": "default.md",
        "training": {k: training.get(k) for k in ("step", "options", "init", "data")},
        "validation_during_training": training.get("validation"),
    }
    out = MODELS / "default.pt"
    save_checkpoint(loaded.model, out, provenance, storage="int8")
    # The card's numbers are measured on the file as shipped (int8 weights).
    metrics = evaluate_phantom(out, args.val_dir)
    provenance["held_out_phantom_metrics"] = metrics
    # Re-quantising dequantised int8 weights gives the same int8 weights back.
    save_checkpoint(load_checkpoint(out).model, out, provenance, storage="int8")
    (HERE / "metrics.json").write_text(json.dumps(
        {"checkpoint": f"{args.checkpoint} (step {training.get('step')})", "val_dir": str(args.val_dir),
         "storage": "int8", "sha256": file_sha256(out), "size_bytes": out.stat().st_size,
         "held_out_phantom": metrics}, indent=2, sort_keys=True) + "\n")
    shutil.copy(args.run_dir / "config.json", HERE / "config.json")
    shutil.copy(args.run_dir / "metrics.csv", HERE / "metrics.csv")
    shutil.copy(args.run_dir / "plot.png", HERE / "plot.png")
    print(json.dumps(metrics, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
