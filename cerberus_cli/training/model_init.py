"""Building the network a run starts from: random, ImageNet encoder, or a model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from cerberus_cli.core.errors import InputError, first_line
from cerberus_cli.model.config import (
    ModelConfig,
    cerberus_heads,
    light_config,
    reference_config,
)
from cerberus_cli.model.network import CerberusNet

ARCHS = {"reference": reference_config, "light": light_config}


def heads_for_tasks(tasks: list[str]) -> list[str]:
    """Head names serving ``tasks``: each instance head with its type head, and tissue."""
    names = []
    for h in cerberus_heads():
        owner = h.parent if h.kind == "type" else h.name
        if owner in tasks:
            names.append(h.name)
    return names


def new_config(arch: str, tasks: list[str], tissue_patch: int) -> ModelConfig:
    if arch not in ARCHS:
        raise InputError(f"unknown --arch {arch!r} (choose from {', '.join(ARCHS)})")
    cfg = ARCHS[arch]()
    return replace(cfg.with_heads(heads_for_tasks(tasks)), tissue_patch_px=tissue_patch)


def load_imagenet_encoder(model: CerberusNet, path: str | Path) -> None:
    """Load a torchvision ResNet state dict (``resnet18/34-*.pth``) into the encoder.

    The classifier (``fc.*``) is dropped; every other tensor must match by name and
    shape, so a ResNet34 file cannot silently half-load into a ResNet18 encoder.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such ImageNet weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for non-checkpoint files
        raise InputError(f"{path}: not a readable torch state dict: {first_line(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a ResNet state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = model.encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise InputError(
            f"{path}: not a torchvision {model.config.encoder} state dict "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {shapes[:3]})"
        )
    model.encoder.load_state_dict(state)


def model_from_checkpoint(spec: str, extra_heads: list[str], tasks: list[str] | None = None,
                          tissue_patch: int | None = None) -> tuple[CerberusNet, dict]:
    """Load a model to start from, adding ``extra_heads`` (new, randomly initialised).

    An encoder-only model (a ``cerberus pretrain`` or ``finetune`` result) gets fresh
    decoders and heads for ``tasks`` around its encoder (weights, stem stride and mpp).
    """
    from cerberus_cli.model.registry import load_model

    loaded = load_model(spec)
    # A post-processing calibration holds for the weights it was measured on, not for
    # the new weights training makes from them.
    cfg = replace(loaded.config, postprocess=())
    if not cfg.heads and tasks:
        if cfg.encoder not in ("resnet18", "resnet34"):
            raise InputError(f"{spec}: a {cfg.encoder} encoder cannot start a Cerberus model "
                             "(its decoders need resnet18 or resnet34)")
        heads = tuple(h for h in cerberus_heads() if h.name in heads_for_tasks(tasks) + extra_heads)
        fresh = replace(cfg, heads=heads, tissue_patch_px=tissue_patch or cfg.tissue_patch_px)
        model = CerberusNet(fresh)
        model.encoder.load_state_dict(loaded.model.encoder.state_dict())
        return model, {"init": spec, "init_sha256": loaded.sha256, "added_heads": [h.name for h in heads],
                       "encoder_only": True}
    add = [h for h in cerberus_heads() if h.name in extra_heads and h.name not in [x.name for x in cfg.heads]]
    for h in add:
        if h.kind == "type" and h.parent not in [x.name for x in cfg.heads]:
            raise InputError(f"{spec}: cannot add head {h.name!r}: the model has no {h.parent!r} head")
    if not add:
        model = loaded.model
        model.config = cfg
    else:
        cfg = replace(cfg, heads=cfg.heads + tuple(add))
        model = CerberusNet(cfg)
        # strict=False: only the added heads are missing; every loaded key has a home.
        model.load_state_dict(loaded.model.state_dict(), strict=False)
    return model, {"init": spec, "init_sha256": loaded.sha256, "added_heads": [h.name for h in add]}


def build_model(arch: str, init: str, tasks: list[str], tissue_patch: int,
                imagenet_weights: str | None = None, extra_heads: list[str] | None = None,
                seed: int = 0) -> tuple[CerberusNet, dict]:
    """The starting network and a provenance note on how it was initialised."""
    if init in ("random", "imagenet"):
        torch.manual_seed(seed)
        model = CerberusNet(new_config(arch, tasks, tissue_patch))
        if init == "imagenet":
            if not imagenet_weights:
                raise InputError("--init imagenet needs --imagenet-weights FILE")
            load_imagenet_encoder(model, imagenet_weights)
            return model, {"init": "imagenet", "imagenet_weights": Path(imagenet_weights).name}
        return model, {"init": "random", "seed": seed}
    torch.manual_seed(seed)  # for any heads added below
    return model_from_checkpoint(init, extra_heads or [], tasks, tissue_patch)
