"""Model lookup: a registry name, our checkpoint file, or an original release file.

Bundled models live in the top-level ``models/`` folder of the source tree, which
is installed as the package ``cerberus_cli.bundled``; each ``NAME.pt`` there is the
registry entry ``NAME`` and ``NAME.md`` its model card. ``CERBERUS_MODELS`` may name
another folder searched first (e.g. a lab's shared model store).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from cerberus_cli.core.errors import CheckpointError
from cerberus_cli.model.checkpoint import LoadedModel, load_checkpoint

DEFAULT_MODEL = "default"


def model_dirs() -> list[Path]:
    """Folders searched for registry names, in order."""
    dirs = []
    if os.environ.get("CERBERUS_MODELS"):
        dirs.append(Path(os.environ["CERBERUS_MODELS"]))
    try:
        dirs.append(Path(str(resources.files("cerberus_cli.bundled"))))
    except ModuleNotFoundError:
        pass
    return dirs


def available_models() -> dict[str, Path]:
    """Registry name -> checkpoint path for every model found."""
    found: dict[str, Path] = {}
    for d in reversed(model_dirs()):
        if d.is_dir():
            found.update({p.stem: p for p in sorted(d.glob("*.pt"))})
    return found


def resolve_model(spec: str | os.PathLike | None = None) -> Path:
    """Turn a ``--model`` value into a checkpoint path.

    ``None`` means the bundled default. A value that names an existing file is used
    as is; otherwise it is looked up as a registry name.
    """
    spec = DEFAULT_MODEL if spec is None else spec
    path = Path(spec)
    if path.exists() or path.suffix in (".pt", ".pth", ".tar") or os.sep in str(spec):
        if not path.exists():
            raise CheckpointError(f"{path}: no such model file")
        return path
    models = available_models()
    if str(spec) not in models:
        names = ", ".join(sorted(models)) or "none installed"
        raise CheckpointError(f"unknown model {spec!r}: not a file and not a registry name ({names})")
    return models[str(spec)]


def load_model(spec: str | os.PathLike | None = None) -> LoadedModel:
    """Resolve and load a model (CPU, eval mode)."""
    return load_checkpoint(resolve_model(spec))
