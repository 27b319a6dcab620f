"""The typed options of ``cerberus evaluate`` (and :func:`cerberus_cli.evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass

from cerberus_cli.core.optionspec import check_positive, check_range, opt, require
from cerberus_cli.core.vocabulary import TASKS
from cerberus_cli.metrics.detection import DEFAULT_RADIUS

METRICS = ("all", "dice", "pq", "aji", "aji+", "mpq", "mpq+", "detection",
           "glas", "object-f1", "object-dice", "object-hausdorff",
           "accuracy", "f1", "map", "confusion")


def _lower(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.lower() for v in values)


@dataclass(frozen=True)
class EvaluateOptions:
    """What is evaluated and how objects are matched."""

    task: str = opt("nuclei", "What is evaluated.", choices=TASKS)
    metrics: tuple[str, ...] = opt(("all",), "Metric to compute (repeatable; default all that the "
                                   f"inputs allow): {', '.join(METRICS)}. glas = the GlaS "
                                   "object-f1, object-dice and object-hausdorff (in all for "
                                   "--task gland).", flag="--metric",
                                   short="-m", multiple=True, parse=_lower)
    true_classes: str | None = opt(None, "Per-pixel class maps of the ground truth: a folder "
                                   "paired by stem, or one file when --true is one map "
                                   "(default: classes/ of a dataset root, NAME.classes.EXT "
                                   "beside NAME.instances.EXT).")
    pred_classes: str | None = opt(None, "Folder of per-pixel class maps for the predictions "
                                   "(paired by stem; label-map predictions only).")
    class_map: str | None = opt(None, "Score the predictions in the ground truth's own classes: "
                                "consep (CoNSeP's other, inflammatory, epithelial, "
                                "spindle-shaped) or a JSON file of truth class id -> the "
                                "predicted class name(s) it covers (the format of train "
                                "--class-map). Each predicted class counts as the most specific "
                                "truth class holding it; a truth class none maps to (CoNSeP's "
                                "other) scores PQ 0 where present, and mpq_predictable / "
                                "mpq+_predictable leave it out. Names come from the preset or "
                                "the dataset's classes.json.", metavar="PRESET|JSON")
    iou_threshold: float = opt(0.5, "PQ matching: pairs need IoU above this (Hungarian matching "
                               "below 0.5).")
    radius: float = opt(DEFAULT_RADIUS, "Detection: centroid matching distance in pixels.")
    allow_missing: bool = opt(False, "Skip unpaired files instead of failing.")

    def __post_init__(self) -> None:
        require(self.task in TASKS, f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        bad = [m for m in self.metrics if m not in METRICS]
        require(not bad, f"--metric: unknown {', '.join(bad)} (choose from {', '.join(METRICS)})")
        check_range("iou_threshold", self.iou_threshold, 0.0, 1.0)
        check_positive("radius", self.radius)
