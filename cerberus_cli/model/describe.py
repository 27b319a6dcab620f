"""A JSON-ready description of a model, for ``cerberus model`` and run records."""

from __future__ import annotations

import os
from typing import Any

from cerberus_cli.model.network import count_parameters
from cerberus_cli.model.registry import load_model


def describe_model(spec: str | os.PathLike | None = None) -> dict[str, Any]:
    """Load ``spec`` and return its name, source, hash, weights licence, config and provenance."""
    loaded = load_model(spec)
    return {
        "name": loaded.config.name,
        "source": loaded.source,
        "sha256": loaded.sha256,
        "package_version": loaded.package_version,
        "parameters": count_parameters(loaded.model),
        "licence": loaded.licence,
        "config": loaded.config.to_dict(),
        "provenance": loaded.provenance,
    }
