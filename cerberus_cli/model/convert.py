"""Conversion of original Cerberus release checkpoints to the cerberus-cli format."""

from __future__ import annotations

import os
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.model.checkpoint import load_checkpoint, save_checkpoint


def convert_weights(source: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Import an original release checkpoint (or re-save one of ours) to ``output``.

    The result is a self-describing cerberus-cli checkpoint with the reference
    configuration and full-precision weights.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise InputError(f"{output}: already exists (use --overwrite to replace it)")
    loaded = load_checkpoint(source)
    provenance = dict(loaded.provenance)
    provenance.setdefault("converted_from", Path(source).name)
    provenance["source_sha256"] = loaded.sha256
    return save_checkpoint(loaded.model, output, provenance=provenance)
