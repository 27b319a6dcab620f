"""The task and class vocabulary: every task name, class list and colour, in one place.

The bottom of the package: imports nothing of cerberus_cli. Model configs, writers,
readers, metrics and training all take their names from here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

#: Every task an object or map can belong to.
TASKS = ("nuclei", "gland", "lumen", "tissue")
#: Tasks whose objects come from an instance head, in post-processing order.
INSTANCE_TASKS = ("gland", "lumen", "nuclei")
#: The patch-classification task (a map, and regions, not instances).
TISSUE = "tissue"


@dataclass(frozen=True)
class ClassSpec:
    """One output class: its name and display colour (RGB 0..255)."""

    name: str
    color: tuple[int, int, int]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ClassSpec:
        return ClassSpec(str(d["name"]), tuple(int(c) for c in d["color"]))  # type: ignore[arg-type]



# --- the Cerberus classes ------------------------------------------------------------

def _classes(*items: tuple[str, tuple[int, int, int]]) -> tuple[ClassSpec, ...]:
    return tuple(ClassSpec(n, c) for n, c in items)


INSTANCE_CLASSES = _classes(
    ("background", (0, 0, 0)), ("inner", (255, 255, 255)), ("boundary", (128, 128, 128))
)
NUCLEUS_TYPES = _classes(
    ("no-label", (128, 128, 128)),
    ("neutrophil", (0, 255, 255)),
    ("epithelial", (255, 0, 0)),
    ("lymphocyte", (0, 0, 255)),
    ("plasma", (0, 128, 0)),
    ("eosinophil", (255, 0, 255)),
    ("connective", (255, 165, 0)),
)
GLAND_TYPES = _classes(
    ("no-label", (128, 128, 128)),
    ("gland", (0, 200, 0)),
    ("surface epithelium", (255, 200, 0)),
)
TISSUE_TYPES = _classes(
    ("background", (255, 255, 255)),
    ("abnormal epithelium", (200, 0, 0)),
    ("normal epithelium", (0, 160, 0)),
    ("inflammatory", (70, 70, 255)),
    ("muscle", (160, 60, 160)),
    ("stroma", (255, 170, 200)),
    ("debris", (120, 80, 40)),
    ("mucous", (100, 220, 220)),
    ("adipose", (255, 240, 140)),
)

#: Classes of objects of instance heads without a type head (lumina): id 1 = the object.
LUMEN_CLASSES = _classes(("no-label", (128, 128, 128)), ("lumen", (0, 170, 255)))

#: Kather-100K / NCT-CRC-HE folder names -> index into TISSUE_TYPES.
KATHER_TO_TISSUE = {
    "BACK": 0, "TUM": 1, "NORM": 2, "LYM": 3, "MUS": 4, "STR": 5, "DEB": 6, "MUC": 7, "ADI": 8,
}



#: Coarse nucleus classes of other datasets, each the set of Cerberus nucleus types it
#: covers. CoNSeP's 4-class merge (HoVer-Net): "inflammatory" is any white cell,
#: "spindle-shaped" the connective-tissue cells, "other" a nucleus of unknown type.
CONSEP_CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle-shaped")
COARSE_NUCLEUS_TYPES: dict[str, tuple[str, ...]] = {
    "other": ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective"),
    "inflammatory": ("neutrophil", "lymphocyte", "plasma", "eosinophil"),
    "epithelial": ("epithelial",),
    "spindle-shaped": ("connective",),
}

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
