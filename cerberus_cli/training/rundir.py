"""The run directory of a training run.

::

    RUN/config.json           the options and the model config
    RUN/metrics.jsonl         one JSON record per logged step or validation
    RUN/metrics.csv           the same records as a table (rewritten as the run goes)
    RUN/checkpoints/last.pt   the latest weights (cerberus-cli checkpoint, fp32)
    RUN/checkpoints/last.state.pt  optimizer, step and RNG state for --resume
    RUN/checkpoints/best.pt   the weights with the best validation score
    RUN/plot.png              training losses and validation metrics
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

from cerberus_cli.core.errors import InputError


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDir:
    """Files of one run; ``open`` creates, resumes or replaces it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics_jsonl = self.path / "metrics.jsonl"
        self.metrics_csv = self.path / "metrics.csv"
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.last_state = self.checkpoints / "last.state.pt"
        self.best = self.checkpoints / "best.pt"
        self.plot = self.path / "plot.png"

    @staticmethod
    def open(path: str | Path, resume: bool, overwrite: bool) -> "RunDir":
        run = RunDir(path)
        if resume:
            if not run.last.is_file() or not run.last_state.is_file():
                raise InputError(f"{run.path}: nothing to resume (no checkpoints/last.pt and last.state.pt)")
            return run
        if run.path.exists() and any(run.path.iterdir()):
            if not overwrite:
                raise InputError(f"{run.path}: run directory exists and is not empty "
                                 "(use --resume to continue it or --overwrite to replace it)")
            if not run.config.is_file():
                raise InputError(f"{run.path}: refusing to overwrite a folder that is not a run directory")
            shutil.rmtree(run.path)
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        return run

    # --- config -----------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        _atomic_write(self.config, json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.config}: cannot read run config: {exc}") from None

    # --- metrics ----------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_jsonl, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.metrics_jsonl.is_file():
            return []
        return [json.loads(line) for line in self.metrics_jsonl.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (logged after the checkpoint a resume starts from)."""
        keep = [r for r in self.records() if r.get("step", 0) <= step]
        _atomic_write(self.metrics_jsonl, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def write_csv(self) -> None:
        records = self.records()
        keys = sorted({k for r in records for k in r}, key=lambda k: (k not in ("kind", "step"), k))
        tmp = self.metrics_csv.with_name(f".{self.metrics_csv.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(records)
        os.replace(tmp, self.metrics_csv)
