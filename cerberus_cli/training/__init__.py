"""Training Cerberus networks from several independent datasets at once.

Modules, one job each:

* ``options``    ``TrainOptions``, the typed options of a run (CLI and library)
* ``formats/``   one reader per dataset format (Lizard, CoNIC, PanNuke, GlaS, CRAG,
  the generic instance layout, tissue class folders, phantom datasets)
* ``dataset_base`` the item types, ``TaskDataset`` and the image/label readers formats share
* ``datasets``   format detection (``open_dataset``) and concatenation
* ``datacheck``  every item read once before the first step, one line per bad file
* ``splits``     patient/image-level split files and random splits
* ``resample``   bringing images and label maps to the model resolution
* ``augment``    geometric and colour augmentation
* ``targets``    inner/boundary maps, U-Net weight maps, type maps
* ``type_codes`` the values of a type map: a class id, a set of classes, or unknown
* ``class_map``  a dataset's own class ids as type-map values (coarse classes as sets)
* ``task_sampler`` the super-task / task sampler (a pure function of seed and step)
* ``batches``    batch assembly in worker processes
* ``losses``     masked per-task losses
* ``validation`` Dice, PQ and accuracies on held-out data (``evaluate_phantom``)
* ``model_init`` the network a run starts from; ``anchor`` the tune-deepest anchor loss
* ``run_checkpoints`` a run's ``last.pt``: one verified file with the whole training state
* ``tempfiles``  temporary names with host and pid; stale ones of dead runs removed
* ``rundir``     the run directory: config, metrics, checkpoints; ``plot`` its plot
* ``loop``       the one training loop of ``train``, ``pretrain`` and ``finetune``: schedule,
  logging, best score, checkpoint and resume, progress (each command supplies its step)
* ``trainer``    ``train(TrainOptions)``, the one entry point of ``cerberus train``
"""

from collections.abc import Callable
from typing import Any

from cerberus_cli.training.options import TrainOptions

__all__ = ["TrainOptions", "train"]


def train(options: TrainOptions, progress: Callable[[int, int, float], None] | None = None) -> Any:
    """Run a training run (see :func:`cerberus_cli.training.trainer.train`).

    ``progress(done, total, loss)`` is called after every step; nothing is printed.
    Imported lazily so that ``import cerberus_cli.training`` does not import torch.
    """
    from cerberus_cli.training.trainer import train as _train

    return _train(options, progress)
