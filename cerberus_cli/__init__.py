"""cerberus: multi-task Cerberus segmentation of H&E whole-slide images.

The public Python API, imported lazily so that ``import cerberus_cli`` stays cheap
(no torch until a function that needs it is used)::

    from cerberus_cli import segment, SegmentOptions, segment_image, train, evaluate

Package map (bottom to top; each layer imports only from layers below it, and above
``synthetic`` two wings that never import each other, see docs/interfaces.md):

- ``core``: errors, task/class vocabulary, object records, atomic write, option fields
- ``model``: network, checkpoints, registry, device; ``slides``: readers, tissue masks
- ``postprocess``: maps to objects; ``outputs``: objects to files
- ``synthetic``: phantom tiles and slides with exact truth
- segmentation wing: ``inference`` (one slide: tile plan, engine, map store, the
  pipeline and its sinks), then ``cohort`` (many slides: runs, workers on devices and
  Ray, claims, shards, status, the commit protocol, run records, rerun)
- learning wing: ``metrics`` (Dice, PQ family, AJI, classification; the evaluate
  runner), then ``training`` (datasets, targets, sampler, losses, trainer), then
  ``transfer`` (features, probes, encoder export)
- ``cli``: the ``cerberus`` command, a thin layer over all of the above; ``python -m
  cerberus_cli`` runs it too (``__main__``)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API: dict[str, str] = {
    "segment": "cerberus_cli.cohort.runs",
    "RunSummary": "cerberus_cli.cohort.outcomes",
    "RunEvents": "cerberus_cli.cohort.outcomes",
    "SegmentOptions": "cerberus_cli.inference.options",
    "PostprocessOptions": "cerberus_cli.postprocess.options",
    "segment_image": "cerberus_cli.inference.memory",
    "segment_region": "cerberus_cli.inference.memory",
    "SegmentResult": "cerberus_cli.inference.memory",
    "slide_info": "cerberus_cli.inference.describe",
    "InfoOptions": "cerberus_cli.inference.describe",
    "open_slide": "cerberus_cli.slides",
    "load_model": "cerberus_cli.model.registry",
    "read_objects": "cerberus_cli.outputs.read",
    "train": "cerberus_cli.training",
    "TrainOptions": "cerberus_cli.training.options",
    "evaluate": "cerberus_cli.metrics.evaluate",
    "EvaluateOptions": "cerberus_cli.metrics.options",
    "CerberusError": "cerberus_cli.core.errors",
    "InputError": "cerberus_cli.core.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'cerberus_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
