"""The registry of encoder kinds and the one list of encoder names.

Each kind (:class:`~cerberus_cli.model.encoder_protocol.EncoderKind`) is one module
registered by one line in :data:`KINDS`; :func:`encoder_names` is what
:class:`~cerberus_cli.model.config.ModelConfig` and the CLI's ``--arch`` accept, and
:func:`build_encoder` is how the network, ``pretrain`` and ``features`` make one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cerberus_cli.model.encoder_protocol import EncoderGeometry, EncoderKind, FeatureEncoder
from cerberus_cli.model.resnet import RESNET

#: Every kind of encoder, by kind name.
KINDS: dict[str, EncoderKind] = {
    "resnet": RESNET,
}


def encoder_names() -> tuple[str, ...]:
    """Registry names of every encoder, kind by kind (e.g. ``resnet18``, ``resnet34``)."""
    return tuple(name for kind in KINDS.values() for name in kind.names)


def encoder_kind(name: str) -> EncoderKind:
    """The kind that builds encoder ``name``.

    Raises:
        ValueError: no kind builds it (the message lists the names there are).
    """
    for kind in KINDS.values():
        if name in kind.names:
            return kind
    raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(encoder_names())}")


def encoder_geometry(name: str, stem_stride: int) -> EncoderGeometry:
    """Levels, strides and channels of encoder ``name``, without building it."""
    return encoder_kind(name).geometry(name, stem_stride)


def build_encoder(name: str, stem_stride: int, with_fc: bool = False) -> FeatureEncoder:
    """A freshly initialised encoder ``name`` (the seeded torch RNG decides its weights)."""
    return encoder_kind(name).build(name, stem_stride, with_fc)


def identify_state(state: Mapping[str, Any]) -> str | None:
    """The encoder name a plain state dict (prefixes and task heads removed) belongs to."""
    return next((found for kind in KINDS.values() if (found := kind.identify(state))), None)


def level_names() -> tuple[str, ...]:
    """Every level name of every registered kind (at stem stride 1), each once."""
    names: dict[str, None] = {}
    for kind in KINDS.values():
        for name in kind.names:
            names.update(dict.fromkeys(kind.geometry(name, 1).levels))
    return tuple(names)
