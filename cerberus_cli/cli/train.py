"""``cerberus train``: a thin wrapper over :func:`cerberus_cli.training.train`."""

from __future__ import annotations

import click

from cerberus_cli.core.errors import InputError


def _pairs(values: str | None, what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (values or "").split(",")):
        key, sep, val = part.partition("=")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"{what}: expected NAME=NUMBER[,NAME=NUMBER...], got {part!r}")
    return out


def _splits(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        task, sep, path = v.partition("=")
        out.update({task: path} if sep else {"*": v})
    return out


@click.command("train")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run directory (config, metrics, checkpoints, plot).")
@click.option("--data", "data", multiple=True, metavar="TASK[:FORMAT]=PATH",
              help="Training data for a task (gland, lumen, nuclei, tissue); the format "
                   "(lizard, conic, pannuke, generic, glas, crag, class-folders, phantom) is "
                   "detected unless named. A bare PATH is a 'cerberus synth tiles' folder. Repeatable.")
@click.option("--val-data", multiple=True, metavar="TASK[:FORMAT]=PATH",
              help="Held-out validation data (default: --val-fraction of the training data).")
@click.option("--split", "splits", multiple=True, metavar="[TASK=]FILE",
              help="Split file of 'key,split' rows (key: image name or patient id; split: train, val, test).")
@click.option("--val-fraction", default=0.1, show_default=True, help="Held-out fraction (by patient where known).")
@click.option("--tissue-map", type=click.Path(dir_okay=False), help="Class mapping file for tissue folders.")
@click.option("--tasks", help="Comma-separated tasks to train (default: those with --data).")
@click.option("--arch", type=click.Choice(["reference", "light"]), default="reference", show_default=True,
              help="reference: ResNet34, stem stride 1; light: ResNet18, stem stride 2.")
@click.option("--init", default="random", show_default=True, metavar="random|imagenet|MODEL",
              help="Start from random weights, an ImageNet encoder, or a model (file or registry name).")
@click.option("--imagenet-weights", type=click.Path(dir_okay=False),
              help="torchvision ResNet state dict file for --init imagenet.")
@click.option("--subtype", type=click.Choice(["nuclei", "gland", "tissue"]),
              help="Single-head stage: train only this task's type decoder (nuclei, gland) or the "
                   "tissue-type head (tissue), all else frozen.")
@click.option("--freeze-encoder", is_flag=True,
              help="Keep the encoder (weights and batch-norm statistics) as --init has it; train the "
                   "decoders and heads of --tasks.")
@click.option("--tune-deepest", is_flag=True,
              help="With --subtype tissue: also train the encoder's deepest block and the bridge, while "
                   "an anchor loss on the segmentation patches of --data keeps the bridge output (what "
                   "every decoder reads) equal to --init's, so segmentation stays as it was.")
@click.option("--anchor-weight", default=10.0, show_default=True,
              help="Weight of the anchor loss (relative squared error of the bridge output) with --tune-deepest.")
@click.option("--steps", type=int, help="Total optimisation steps [default: 20000; on --resume: the run's].")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--lr-drop-at", type=int, help="Step at which the learning rate drops (default: 80% of --steps).")
@click.option("--lr-drop-to", default=1e-4, show_default=True)
@click.option("--sampler", type=click.Choice(["mixed", "fixed"]), default="mixed", show_default=True,
              help="mixed: each sample draws its task; fixed: one task per batch.")
@click.option("--tissue-batch-size", type=int, help="Samples per tissue-type batch (default: --batch-size).")
@click.option("--tissue-bn", type=click.Choice(["update", "keep"]), default="update", show_default=True,
              help="update: tissue batches move the encoder's batch-norm statistics; keep: they use and "
                   "keep those of the segmentation batches.")
@click.option("--tissue-prob", default=0.3, show_default=True, help="Probability of a tissue-type batch.")
@click.option("--task-probs", metavar="TASK=P,...", help="Task probabilities within segmentation batches.")
@click.option("--patch", default=448, show_default=True, help="Segmentation patch size (px).")
@click.option("--tissue-patch", default=144, show_default=True, help="Tissue patch size (px).")
@click.option("--no-augment", is_flag=True, help="Turn augmentation off.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", is_flag=True, help="Mixed precision (fp16 on CUDA, bf16 on CPU).")
@click.option("--workers", default=2, show_default=True, help="Data loading worker processes.")
@click.option("--threads", type=int, help="torch CPU threads.")
@click.option("--val-every", default=1000, show_default=True)
@click.option("--val-limit", default=32, show_default=True, help="Validation items per task.")
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--log-every", default=10, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train(**kw) -> None:
    """Train a Cerberus model on nuclei, gland, lumen and tissue-type datasets at once.

    \b
    Examples:
      cerberus synth tiles -o phantom/ --count 200
      cerberus train -o runs/demo --data phantom/ --arch light --steps 2000
      cerberus train -o runs/crc --data nuclei=Lizard/ --data gland=GlaS/ \\
          --data lumen:generic=lumen/ --data tissue=NCT-CRC-HE-100K/ \\
          --init imagenet --imagenet-weights resnet34-b627a593.pth
      cerberus train -o runs/crc --resume --steps 40000
      cerberus train -o runs/types --subtype nuclei --init runs/crc/checkpoints/best.pt \\
          --data nuclei=Lizard/
      cerberus train -o runs/tissue --subtype tissue --tune-deepest --init runs/crc/checkpoints/best.pt \\
          --data tissue=NCT-CRC-HE-100K/ --data gland=GlaS/ --tissue-prob 0.5
    """
    from cerberus_cli.training import TrainOptions
    from cerberus_cli.training import train as run_training
    from cerberus_cli.training.options import DataSpec

    options = TrainOptions(
        output=kw["output"],
        data=[s for d in kw["data"] for s in DataSpec.parse(d)],
        val_data=[s for d in kw["val_data"] for s in DataSpec.parse(d)],
        splits=_splits(kw["splits"]),
        val_fraction=kw["val_fraction"],
        tissue_map=kw["tissue_map"],
        tasks=[t.strip() for t in kw["tasks"].split(",")] if kw["tasks"] else None,
        arch=kw["arch"], init=kw["init"], imagenet_weights=kw["imagenet_weights"], subtype=kw["subtype"],
        freeze_encoder=kw["freeze_encoder"], tune_deepest=kw["tune_deepest"], anchor_weight=kw["anchor_weight"],
        steps=kw["steps"], batch_size=kw["batch_size"], tissue_batch_size=kw["tissue_batch_size"],
        lr=kw["lr"], lr_drop_at=kw["lr_drop_at"], lr_drop_to=kw["lr_drop_to"], sampler=kw["sampler"],
        tissue_prob=kw["tissue_prob"], tissue_bn=kw["tissue_bn"],
        task_probs=_pairs(kw["task_probs"], "--task-probs"), patch=kw["patch"],
        tissue_patch=kw["tissue_patch"], augment=not kw["no_augment"], seed=kw["seed"],
        device=kw["device"], amp=kw["amp"], workers=kw["workers"], threads=kw["threads"],
        val_every=kw["val_every"], val_limit=kw["val_limit"], checkpoint_every=kw["checkpoint_every"],
        log_every=kw["log_every"], resume=kw["resume"], overwrite=kw["overwrite"],
        progress=not kw["no_progress"],
    )
    result = run_training(options)
    click.echo(f"run: {result.run_dir}")
    click.echo(f"last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint is not None:
        click.echo(f"best checkpoint: {result.best_checkpoint} (score {result.best_score:.4f})")
        for k, v in sorted(result.best_metrics.items()):
            click.echo(f"  {k}: {v:.4f}")
    for k, v in sorted(result.samples_per_s.items()):
        click.echo(f"throughput {k}: {v:.1f} samples/s")
