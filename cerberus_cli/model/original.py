"""Import of checkpoints from the original Cerberus release.

The release file is a ``torch.save`` dict whose key ``desc`` holds the state dict
(optionally with the ``module.`` prefix of DataParallel). Import is exact: every
tensor is loaded, and any missing, unexpected or mis-shaped key is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from cerberus_cli.core.errors import CheckpointError
from cerberus_cli.model.config import ModelConfig, reference_config
from cerberus_cli.model.network import CerberusNet

#: Original head names -> ours.
HEAD_NAMES = {
    "Gland": "gland",
    "Gland#TYPE": "gland_type",
    "Lumen": "lumen",
    "Nuclei": "nuclei",
    "Nuclei#TYPE": "nuclei_type",
}

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^backbone\."), "encoder."),
    (re.compile(r"^conv_map\."), "bridge."),
    (re.compile(r"^decoder_head\.Patch-Class\."), "tissue_head."),
]


def is_original_checkpoint(obj: object) -> bool:
    """True for a loaded object that looks like an original-release checkpoint."""
    return isinstance(obj, Mapping) and "desc" in obj and isinstance(obj["desc"], Mapping)


def rename_key(key: str) -> str:
    """Map one original state-dict key to our naming."""
    if key.startswith("module."):
        key = key[len("module."):]
    for pattern, repl in _RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    m = re.match(r"^decoder_head\.([^.]+)\.(.*)$", key)
    if m and m.group(1) in HEAD_NAMES:
        return f"decoders.{HEAD_NAMES[m.group(1)]}.{m.group(2)}"
    m = re.match(r"^output_head\.([^.]+)\.(?:INST|TYPE)\.x\.(.*)$", key)
    if m and m.group(1) in HEAD_NAMES:
        return f"heads.{HEAD_NAMES[m.group(1)]}.{m.group(2)}"
    return key


def convert_state_dict(
    original: Mapping[str, torch.Tensor], config: ModelConfig | None = None, source: str = "checkpoint"
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Rename an original state dict and check it against our network exactly.

    Returns the model config and the renamed state dict (the ResNet ``fc`` layer,
    unused by Cerberus, is dropped after its shape is checked).

    Raises:
        CheckpointError: naming every missing, unexpected and mis-shaped key.
    """
    config = config or reference_config()
    renamed = {rename_key(k): v for k, v in original.items()}
    if len(renamed) != len(original):
        raise CheckpointError(f"{source}: duplicate keys after removing the 'module.' prefix")
    expected = CerberusNet(config, with_fc=True).state_dict()
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    shapes = sorted(
        f"{k} {tuple(renamed[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(renamed)
        if not isinstance(renamed[k], torch.Tensor) or renamed[k].shape != expected[k].shape
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            shown = ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")
            problems.append(f"{len(items)} {label} key(s): {shown}")
    if problems:
        raise CheckpointError(f"{source}: not an original Cerberus checkpoint: " + "; ".join(problems))
    state = {k: v for k, v in renamed.items() if not k.startswith("encoder.fc.")}
    return config, state
