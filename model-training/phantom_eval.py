"""Evaluate a model on held-out phantom tiles and print the metrics as JSON.

    python model-training/phantom_eval.py MODEL PHANTOM_DIR [--limit N] [-o metrics.json]

MODEL is a checkpoint file or registry name (``default``); PHANTOM_DIR a folder
written by ``cerberus synth tiles``. The numbers come from
:func:`cerberus_cli.training.validation.evaluate_phantom`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cerberus_cli.core.errors import CerberusError
from cerberus_cli.training.validation import evaluate_phantom


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model-training/phantom_eval.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("phantom_dir")
    parser.add_argument("--limit", type=int, default=None, help="Items per task (default: all).")
    parser.add_argument("-o", "--output", help="Also write the metrics to this JSON file.")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_phantom(args.model, args.phantom_dir, args.limit)
    except CerberusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(metrics, indent=2, sort_keys=True)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
