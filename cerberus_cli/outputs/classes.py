"""Class names and display colours of each task, from the model's class lists."""

from __future__ import annotations

import hashlib

from cerberus_cli.model.config import (
    GLAND_TYPES, LUMEN_CLASSES, NUCLEUS_TYPES, TISSUE_TYPES, ClassSpec,
)

#: Class list of each task's objects (class_id indexes into it).
TASK_CLASSES: dict[str, tuple[ClassSpec, ...]] = {
    "nuclei": NUCLEUS_TYPES,
    "gland": GLAND_TYPES,
    "lumen": LUMEN_CLASSES,
    "tissue": TISSUE_TYPES,
}

#: QuPath object type of each task: many small detections, few large annotations.
QUPATH_OBJECT_TYPE = {"nuclei": "detection", "lumen": "detection",
                      "gland": "annotation", "tissue": "annotation"}


def class_color(task: str, class_id: int, class_name: str) -> tuple[int, int, int]:
    """Display colour of a class: from the task's class list, matched by id then name.

    Classes the lists do not know (e.g. of a custom model) get a stable colour
    derived from the name, so they look the same in every file.
    """
    classes = TASK_CLASSES.get(task, ())
    if 0 <= class_id < len(classes) and classes[class_id].name == class_name:
        return classes[class_id].color
    for spec in classes:
        if spec.name == class_name:
            return spec.color
    digest = hashlib.sha1(class_name.encode("utf-8")).digest()
    return (digest[0], digest[1], digest[2])


def class_id_for(task: str, class_name: str) -> int:
    """Index of ``class_name`` in the task's class list, or -1 when unknown."""
    for i, spec in enumerate(TASK_CLASSES.get(task, ())):
        if spec.name == class_name:
            return i
    return -1
