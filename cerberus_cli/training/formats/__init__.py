"""Dataset readers, one module per format, and format detection.

* ``lizard``: PNG images and ``.mat`` labels (``inst_map``, ``id``, ``class``)
* ``conic``: ``images.npy`` and ``labels.npy`` (instances and classes)
* ``pannuke``: ``images.npy`` and ``masks.npy`` per fold
* ``generic``: the generic instance layout (``images/``, ``instances/``, ``classes/``)
* ``glas``: GlaS ``NAME.bmp`` images with ``NAME_anno.bmp`` gland instances
* ``crag``: CRAG ``Images/`` with ``Annotation/`` instance maps
* ``tissue_folders``: tissue-type class folders ``ROOT/<CLASS>/*``
* ``phantom``: ``cerberus synth tiles`` output, one folder per task
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import TaskDataset
from cerberus_cli.training.formats import (
    conic,
    crag,
    generic,
    glas,
    lizard,
    pannuke,
    phantom,
    tissue_folders,
)

Opener = Callable[..., TaskDataset]

#: Format name -> opener ``(path, task, target_mpp, **kwargs) -> TaskDataset``.
FORMATS: dict[str, Opener] = {
    "lizard": lizard.LizardDataset,
    "conic": conic.ConicDataset,
    "pannuke": pannuke.PanNukeDataset,
    "generic": generic.GenericDataset,
    "glas": glas.GlasDataset,
    "crag": crag.CragDataset,
    "class-folders": tissue_folders.TissueFolderDataset,
    "phantom": phantom.open_phantom,
}

# Checked in order: the most specific layouts first.
_DETECTORS = {
    "nuclei": [("phantom", phantom.looks_like), ("conic", conic.looks_like),
               ("pannuke", pannuke.looks_like), ("generic", generic.looks_like),
               ("lizard", lizard.looks_like)],
    "gland": [("phantom", phantom.looks_like), ("generic", generic.looks_like),
              ("glas", glas.looks_like), ("crag", crag.looks_like)],
    "lumen": [("phantom", phantom.looks_like), ("generic", generic.looks_like)],
    "tissue": [("phantom", phantom.looks_like), ("class-folders", tissue_folders.looks_like)],
}


def detect(task: str, path: Path) -> str:
    """Name of the format of ``path`` for ``task``; a clear error when none fits."""
    if not path.is_dir():
        raise InputError(f"{path}: expected a dataset folder")
    for name, fits in _DETECTORS.get(task, []):
        if fits(path):
            return name
    names = ", ".join(n for n, _ in _DETECTORS.get(task, []))
    raise InputError(f"{path}: not a recognised {task} dataset layout (tried {names}); "
                     "name the format with TASK:FORMAT=PATH")
