"""Scoring predictions in the ground truth's own classes (``cerberus evaluate --class-map``).

Public datasets label objects in their own, often coarser, classes: CoNSeP's
4-class merge has "inflammatory" for any white cell where cerberus tells
neutrophils, lymphocytes, plasma cells and eosinophils apart. A class map names,
for every class id of the truth, the set of predicted (cerberus) class names it
covers, in the format of ``cerberus train --class-map`` (one file serves both)::

    {"1": ["neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective"],
     "2": ["neutrophil", "lymphocyte", "plasma", "eosinophil"],
     "3": "epithelial",
     "4": "connective"}

or the preset ``consep`` (:data:`~cerberus_cli.core.vocabulary.COARSE_NUCLEUS_TYPES`).
A value may also be ``null``: a truth class that no prediction can be.

Every predicted class is scored as the *most specific* truth class covering it:
the one whose set is smallest. CoNSeP's "other" (a nucleus of unknown type)
covers every type, so each type finds a smaller set (neutrophil, lymphocyte,
plasma, eosinophil -> inflammatory; epithelial -> epithelial; connective ->
spindle-shaped) and no prediction is ever "other": that class scores PQ 0 in
every image whose truth holds it. Such truth classes are reported as
*unpredictable*, and mPQ/mPQ+ are reported both over all truth classes and over
the predictable ones (``mpq_predictable``, ``mpq+_predictable``). Two smallest
sets of one size holding a predicted class are an error (the map is ambiguous);
a predicted class that no truth class covers is scored as unclassified (class 0:
an object for PQ, in no class) and listed.

The truth's class names (the per-class rows of the report) are the preset's, or
those of the dataset's ``classes.json``, else ``class N``. A ``classes.json``
that names other classes than the preset it is scored with is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cerberus_cli.core.class_maps import read_class_map
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import TASK_CLASSES, class_id_for

#: Tasks whose predictions carry classes that a class map can translate.
MAPPABLE_TASKS = ("nuclei", "gland")


@dataclass(frozen=True)
class TruthClasses:
    """The truth's classes and where every predicted class falls among them.

    ``names[t]`` names truth class ``t`` (0 = background); ``covers[t]`` the
    predicted class names truth class ``t`` covers; ``lut[p]`` the truth class of
    predicted class id ``p`` (an index into the task's class list; 0 = none).
    """

    name: str
    task: str
    names: tuple[str, ...]
    covers: Mapping[int, tuple[str, ...]]
    lut: np.ndarray

    @property
    def predictable(self) -> tuple[int, ...]:
        """Truth class ids (1..) that some predicted class is scored as."""
        hit = set(self.lut[1:].tolist())
        return tuple(t for t in range(1, len(self.names)) if t in hit)

    @property
    def unpredictable(self) -> tuple[int, ...]:
        """Truth class ids (1..) that no predicted class is scored as (PQ 0 where present)."""
        hit = set(self.predictable)
        return tuple(t for t in range(1, len(self.names)) if t not in hit)

    @property
    def unmapped(self) -> tuple[str, ...]:
        """Predicted class names (bar no-label) that no truth class covers."""
        names = [c.name for c in TASK_CLASSES[self.task]]
        return tuple(names[p] for p in range(1, len(names)) if self.lut[p] == 0)

    def to_truth(self, pred_classes: np.ndarray) -> np.ndarray:
        """Predicted class ids (task list) as truth class ids."""
        return self.lut[np.asarray(pred_classes, dtype=np.int64)]

    def describe(self) -> dict[str, Any]:
        """What the report records under ``settings["class_map"]``."""
        names = [c.name for c in TASK_CLASSES[self.task]]
        return {
            "name": self.name,
            "truth_classes": list(self.names[1:]),
            "pred_to_truth": {names[p]: self.names[int(self.lut[p])]
                              for p in range(1, len(names)) if self.lut[p]},
            "unpredictable": [self.names[t] for t in self.unpredictable],
            "predictable": [self.names[t] for t in self.predictable],
            "unmapped_pred": list(self.unmapped),
        }


def load_class_map(spec: str, task: str,
                   truth_names: tuple[Path, Mapping[int, str]] | None = None) -> TruthClasses:
    """A preset name or JSON file as :class:`TruthClasses` for ``task``.

    ``truth_names`` is the truth's ``classes.json`` (path, id -> name) when it has
    one (:func:`cerberus_cli.metrics.readers.find_class_names`).

    Raises:
        InputError: unknown preset, unreadable or malformed file, a preset of another
            task, names that are not the task's, an ambiguous map, or a
            ``classes.json`` contradicting the preset.
    """
    if task not in MAPPABLE_TASKS:
        raise InputError(f"--class-map {spec}: task {task!r} has no predicted classes to map")
    sets = read_class_map(spec, task)
    if sets.source_names is not None:
        preset_names = sets.source_names
        if truth_names is not None:
            where, found = truth_names
            bad = [i for i, n in found.items() if i > 0 and
                   (i >= len(preset_names) or n != preset_names[i])]
            if bad:
                raise InputError(f"{where}: names class {bad[0]} {found[bad[0]]!r}, but the "
                                 f"{spec} class map has {', '.join(preset_names[1:])} (ids "
                                 f"1..{len(preset_names) - 1}); give a class map of these classes")
        return _build(spec, task, list(preset_names), dict(sets.covers))
    covers = dict(sets.covers)
    top = max([*covers, *(truth_names[1] if truth_names else {})])
    names = [f"class {i}" for i in range(top + 1)]
    names[0] = "background"
    if truth_names is not None:
        for i, n in truth_names[1].items():
            names[i] = n
    return _build(spec, task, names, covers)


def _build(name: str, task: str, names: list[str], covers: dict[int, tuple[str, ...]]) -> TruthClasses:
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise InputError(f"--class-map {name}: truth classes {seen[n]} and {i} are both "
                             f"named {n!r}")
        seen[n] = i
    pred_names = [c.name for c in TASK_CLASSES[task]]
    lut = np.zeros(len(pred_names), dtype=np.int64)
    for p, pname in enumerate(pred_names[1:], start=1):
        holders = sorted((len(c), t) for t, c in covers.items() if pname in c)
        if len(holders) > 1 and holders[0][0] == holders[1][0]:
            raise InputError(f"--class-map {name}: predicted class {pname!r} lies in truth classes "
                             f"{names[holders[0][1]]!r} and {names[holders[1][1]]!r}, sets of one "
                             "size; each predicted class needs one most specific truth class")
        if holders:
            lut[p] = holders[0][1]
    return TruthClasses(name, task, tuple(names), covers, lut)


def class_ids(class_names: Sequence[str], task: str, where: str) -> np.ndarray:
    """Class ids (into the task's class list) of objects named ``class_names``.

    Raises :class:`InputError` naming ``where`` for names the task does not know.
    """
    ids = np.array([class_id_for(task, str(n)) for n in class_names], dtype=np.int64)
    if (ids < 0).any():
        unknown = sorted({str(n) for n, i in zip(class_names, ids) if i < 0})
        known = ", ".join(c.name for c in TASK_CLASSES[task])
        raise InputError(f"{where}: class {', '.join(map(repr, unknown[:3]))} is not a {task} "
                         f"class ({known})")
    return ids
