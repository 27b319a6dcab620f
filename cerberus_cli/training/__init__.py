"""Training Cerberus networks from several independent datasets at once.

Modules, one job each:

* ``formats/``   one reader per dataset format (Lizard, CoNIC, PanNuke, GlaS, CRAG,
  the generic instance layout, tissue class folders, phantom datasets)
* ``datasets``   the common item types and format detection (``open_dataset``)
* ``splits``     patient/image-level split files and random splits
* ``resample``   bringing images and label maps to the model resolution
* ``augment``    geometric and colour augmentation
* ``targets``    inner/boundary maps, U-Net weight maps, type maps
* ``sampler``    the super-task / task sampler (a pure function of seed and step)
* ``batches``    batch assembly in worker processes
* ``losses``     masked per-task losses
* ``validation`` Dice, PQ and accuracies on held-out data (``evaluate_phantom``)
* ``rundir``     the run directory: config, metrics, checkpoints, plot
* ``trainer``    ``train(TrainOptions)``, the one entry point of ``cerberus train``
"""

from cerberus_cli.training.options import TrainOptions

__all__ = ["TrainOptions", "train"]


def train(options: TrainOptions):
    """Run a training run (see :func:`cerberus_cli.training.trainer.train`)."""
    from cerberus_cli.training.trainer import train as _train

    return _train(options)
