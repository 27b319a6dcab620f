"""The cerberus-cli checkpoint: one self-describing file.

A checkpoint is a ``torch.save`` dict (loadable with ``weights_only=True``)::

    format            "cerberus-cli/checkpoint"
    format_version    1
    package_version   version of cerberus-cli that wrote it
    created           ISO-8601 UTC time
    config            ModelConfig.to_dict(): encoder, stem stride, heads, classes,
                      colours, mpp, tile geometry; ``postprocess`` (the weights'
                      post-processing calibration) when they have one
    provenance        free-form dict: how the weights were made (training run,
                      import source, data, metrics)
    storage           "fp32" | "fp16" | "int8" (how the float weights are stored)
    state_dict        the weights
    scales            per-output-channel scales of int8-stored tensors

Loading needs nothing but the file, always lands on the CPU first (a checkpoint
saved on CUDA loads on a CPU-only machine), and also accepts the original Cerberus
release format.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cerberus_cli import __version__
from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import CheckpointError, first_line
from cerberus_cli.core.hashing import file_sha256
from cerberus_cli.model.config import ModelConfig
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.model.original import convert_state_dict, is_original_checkpoint

FORMAT = "cerberus-cli/checkpoint"
FORMAT_VERSION = 1
STORAGES = ("fp32", "fp16", "int8")
# Tensors smaller than this stay fp32 under int8 storage (biases, BN): they are
# tiny and their precision matters most.
_INT8_MIN_NUMEL = 4096


@dataclass
class LoadedModel:
    """A network ready for use, with the metadata of the file it came from."""

    model: CerberusNet
    config: ModelConfig
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    sha256: str = ""
    package_version: str = ""

    @property
    def licence(self) -> str:
        """The terms of the weights as their provenance states them (``provenance["licence"]``).

        Weights inherit the terms of the data they were trained on, which may differ from
        the code's MIT licence; a file that does not say is reported as such.
        """
        terms = self.provenance.get("licence")
        if isinstance(terms, dict) and terms.get("weights"):
            return str(terms["weights"])
        return "not stated in the file (ask whoever trained it)"


def _encode(state: dict[str, torch.Tensor], storage: str) -> tuple[dict, dict]:
    out: dict[str, torch.Tensor] = {}
    scales: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if not v.is_floating_point() or storage == "fp32":
            out[k] = v.clone()
        elif storage == "fp16" or v.numel() < _INT8_MIN_NUMEL:
            out[k] = v.to(torch.float16) if storage == "fp16" else v.float().clone()
        else:
            flat = v.float().reshape(v.shape[0], -1)
            scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            out[k] = torch.round(flat / scale[:, None]).to(torch.int8).reshape(v.shape)
            scales[k] = scale
    return out, scales


def _decode(state: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if k in scales:
            s = scales[k].float()
            out[k] = (v.float().reshape(v.shape[0], -1) * s[:, None]).reshape(v.shape)
        elif v.is_floating_point():
            out[k] = v.float()
        else:
            out[k] = v
    return out


def save_checkpoint(
    model: CerberusNet,
    path: str | os.PathLike,
    provenance: dict[str, Any] | None = None,
    storage: str = "fp32",
) -> Path:
    """Write ``model`` and its config to ``path`` atomically; return the path.

    ``storage="int8"`` stores large weight tensors as int8 with a per-output-channel
    scale (4x smaller, for bundled models); biases and BN statistics stay fp32.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.fc.")}
    weights, scales = _encode(state, storage)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": model.config.to_dict(),
        "provenance": dict(provenance or {}),
        "storage": storage,
        "state_dict": weights,
        "scales": scales,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = AtomicPath(path, overwrite=True)
    try:
        torch.save(payload, target.tmp)
    except BaseException:
        target.abort()
        raise
    return target.commit()


def _read(path: Path) -> Any:
    """The unpickled checkpoint, or one :class:`CheckpointError` line for any bad file."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: file is empty")
        with warnings.catch_warnings():
            # torch warns about pickle protocols of foreign files; the error below says it all.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except PermissionError:
        raise CheckpointError(f"{path}: cannot read (permission denied)") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            # Safe loading refused a Python object: name it, never suggest unsafe loading.
            raise CheckpointError(
                f"{path}: not a checkpoint cerberus-cli loads: it holds Python objects "
                f"({found.group(1)}) besides tensors; a Cerberus checkpoint holds only "
                "tensors and plain values") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated, or "
                              "not a PyTorch file)") from None
    except Exception as exc:  # noqa: BLE001 (torch raises KeyError, zip, storage errors for bad files)
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated, or not a "
                              f"PyTorch file: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    """The first line of an error message, without advice about unsafe loading."""
    text = first_line(exc)
    if "weights_only" in text or len(text) > 160:
        return type(exc).__name__
    return text


def _contents(path: Path, obj: Any, config: ModelConfig | None
              ) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any], str]:
    """(config, state dict, provenance, package version) of a loaded checkpoint object."""
    if is_original_checkpoint(obj):
        cfg, state = convert_state_dict(obj["desc"], config, source=str(path))
        return cfg, state, {"imported_from": path.name, "source_format": "original-cerberus"}, ""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if int(obj.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format {obj['format_version']} is newer than this "
                f"cerberus-cli supports ({FORMAT_VERSION}); upgrade cerberus-cli"
            )
        try:
            cfg = ModelConfig.from_dict(obj["config"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: invalid model config in checkpoint: "
                                  f"{_first_line(exc)}") from None
        state = _decode(obj["state_dict"], obj.get("scales", {}))
        return cfg, state, dict(obj.get("provenance", {})), str(obj.get("package_version", ""))
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        first = next(iter(obj))
        raise CheckpointError(
            f"{path}: a bare state dict ({len(obj)} tensors, e.g. {first!r}), not a Cerberus "
            "checkpoint: cerberus-cli files carry their model config; original release files "
            "keep their weights under 'desc'")
    raise CheckpointError(
        f"{path}: not a Cerberus checkpoint (neither cerberus-cli format nor an original "
        "release file with a 'desc' state dict)"
    )


def load_checkpoint(path: str | os.PathLike, config: ModelConfig | None = None) -> LoadedModel:
    """Load a cerberus-cli checkpoint or an original Cerberus release checkpoint.

    The model comes back on the CPU in eval mode. ``config`` is only used for
    original-release files (default: the reference configuration).

    Raises:
        CheckpointError: missing, empty, corrupt, truncated or incompatible files.
    """
    path = Path(path)
    obj = _read(path)
    try:
        cfg, state, provenance, version = _contents(path, obj, config)
        model = CerberusNet(cfg)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        # A file in our format (or a release file) whose contents are not what they claim.
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else _first_line(exc)
        raise CheckpointError(f"{path}: malformed checkpoint ({what})") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as exc:
        shape = re.search(r"size mismatch for [\w.]+", str(exc))
        raise CheckpointError(f"{path}: weights do not match the model config: "
                              f"{shape.group(0) if shape else _first_line(exc)}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match the model config "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    model.eval()
    return LoadedModel(model, cfg, provenance, str(path), file_sha256(path), version)
