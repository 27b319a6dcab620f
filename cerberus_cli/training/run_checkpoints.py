"""Training checkpoints: everything a run needs to continue, in one verified file.

``checkpoints/last.pt`` is a model checkpoint (the keys of
:mod:`cerberus_cli.model.checkpoint`, fp32 weights, so ``--init``, ``segment`` and
``model`` read it as any model) with two more keys:

``training_state``
    ``format`` ("cerberus-cli/training-state"), ``format_version``, ``step``, the
    optimizer, the AMP scaler, the learning rate, the RNG states (python, numpy,
    torch, CUDA), the loader position, the byte offset and SHA-256 of
    ``metrics.jsonl`` at the checkpoint, and the best validation score so far.
``digest``
    SHA-256 over every other key, tensors by dtype, shape and bytes
    (:func:`content_digest`): a file that does not match it is refused on load.

The file is written once, to an owned temporary name, flushed and renamed
(:class:`~cerberus_cli.training.tempfiles.OwnedAtomicPath`): a kill at any instant
leaves the previous checkpoint or the new one, whole. Batches, augmentation and the
learning rate are pure functions of (seed, step), so this state is all a resumed
run needs to continue bit for bit.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cerberus_cli import __version__
from cerberus_cli.core.errors import CheckpointError
from cerberus_cli.model.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.training.tempfiles import write_file

log = logging.getLogger(__name__)

STATE_FORMAT = "cerberus-cli/training-state"
STATE_FORMAT_VERSION = 1
#: The separate optimizer file of earlier versions, read only to resume their runs.
LEGACY_STATE_NAME = "last.state.pt"


@dataclass
class TrainState:
    """What a run needs besides the weights to continue exactly where it stopped."""

    step: int
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None = None
    lr: float = 0.0
    rng: dict[str, Any] = field(default_factory=dict)
    #: ``{"next_step", "seed"}``: batches are a pure function of (seed, step).
    loader: dict[str, Any] = field(default_factory=dict)
    #: ``{"offset", "sha256"}`` of metrics.jsonl at the checkpoint; None: unknown.
    metrics: dict[str, Any] | None = None
    best_score: float = float("-inf")
    best_metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "step": self.step,
                "optimizer": self.optimizer, "scaler": self.scaler, "lr": self.lr, "rng": self.rng,
                "loader": self.loader, "metrics": self.metrics, "best_score": self.best_score,
                "best_metrics": self.best_metrics}

    @staticmethod
    def from_dict(d: dict[str, Any], where: Path) -> TrainState:
        """Parse a ``training_state`` entry; a malformed one is a :class:`CheckpointError`."""
        if d.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{where}: 'training_state' is not a {STATE_FORMAT} record")
        if int(d.get("format_version", 0)) > STATE_FORMAT_VERSION:
            raise CheckpointError(f"{where}: training state format {d['format_version']} is newer than this "
                                  f"cerberus-cli supports ({STATE_FORMAT_VERSION}); upgrade cerberus-cli")
        try:
            return TrainState(step=int(d["step"]), optimizer=dict(d["optimizer"]), scaler=d.get("scaler"),
                              lr=float(d.get("lr", 0.0)), rng=dict(d.get("rng") or {}),
                              loader=dict(d.get("loader") or {}), metrics=d.get("metrics"),
                              best_score=float(d["best_score"]), best_metrics=dict(d["best_metrics"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: incomplete training state ({type(exc).__name__}: {exc})") from None


@dataclass
class ResumePoint:
    """A training checkpoint as loaded: the model (CPU, eval mode) and the state."""

    model: CerberusNet
    provenance: dict[str, Any]
    state: TrainState
    sha256: str
    legacy: bool = False
    #: The entries of :func:`save_training`'s ``extra`` that the caller asked for.
    extra: dict[str, Any] = field(default_factory=dict)


# --- RNG states -------------------------------------------------------------------

def seed_all(seed: int) -> None:
    """Seed every global RNG a run's state records (python, numpy, torch and CUDA).

    Training draws its batches from generators of its own, but whatever uses the
    global RNGs (dropout; any library code) must start from the same state in every
    run with this seed, so that a resumed run's states match an uninterrupted one's.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch, CUDA) as plain tensors and numbers."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np.asarray(np_state["state"]["key"], np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the global RNG states from :func:`capture_rng` (parts absent are left as they are)."""
    if rng.get("python"):
        p = rng["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if rng.get("numpy"):
        n = rng["numpy"]
        np.random.set_state({"bit_generator": n["bit_generator"],
                             "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                             "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    if rng.get("torch") is not None:
        torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available():
        # A run may resume on a machine with fewer GPUs: set those there are.
        for i in range(min(len(cuda), torch.cuda.device_count())):
            torch.cuda.set_rng_state(cuda[i], i)


# --- digest -----------------------------------------------------------------------

def _feed(h: Any, obj: Any) -> None:
    """Feed ``obj`` to hash ``h`` in a form that survives a save/load round trip."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for v in obj:
            _feed(h, v)
    elif obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, int):
        h.update(b"I%d;" % obj)
    elif isinstance(obj, float):
        h.update(b"F" + obj.hex().encode() + b";")  # exact, -inf and nan included
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(data) + data)
    elif isinstance(obj, bytes):
        h.update(b"Y%d:" % len(obj) + obj)
    else:
        raise TypeError(f"cannot digest a {type(obj).__name__} in a training checkpoint")


def content_digest(payload: dict[str, Any]) -> str:
    """SHA-256 of every entry of ``payload`` but ``digest``, independent of the pickle bytes."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "digest"})
    return h.hexdigest()


# --- writing ----------------------------------------------------------------------

def model_payload(model: CerberusNet, provenance: dict[str, Any]) -> dict[str, Any]:
    """The entries of a model checkpoint (:mod:`cerberus_cli.model.checkpoint`) with fp32 weights."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("encoder.fc.")}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": model.config.to_dict(),
        "provenance": dict(provenance),
        "storage": "fp32",
        "state_dict": state,
        "scales": {},
    }


def _write(payload: dict[str, Any], path: Path) -> Path:
    return write_file(path, lambda tmp: torch.save(payload, tmp))


def save_model(model: CerberusNet, path: str | os.PathLike, provenance: dict[str, Any],
               extra: dict[str, Any] | None = None) -> Path:
    """Write a model checkpoint (e.g. ``best.pt``) atomically; return its path.

    ``extra``: more top-level entries (a command's own weights, such as the task heads
    of ``pretrain`` or the classifier of ``finetune``).
    """
    return _write({**model_payload(model, provenance), **(extra or {})}, Path(path))


def save_training(model: CerberusNet, path: str | os.PathLike, provenance: dict[str, Any],
                  state: TrainState, extra: dict[str, Any] | None = None) -> Path:
    """Write weights and training state as one checkpoint file, atomically; return its path.

    ``extra`` as in :func:`save_model`; the digest covers it. A ``last.state.pt`` of an
    earlier version beside it is removed once the new file is in place: from then on
    the state inside the checkpoint is the one that counts.
    """
    path = Path(path)
    payload = {**model_payload(model, provenance), **(extra or {})}
    payload["training_state"] = state.to_dict()
    payload["digest"] = content_digest(payload)
    _write(payload, path)
    path.with_name(LEGACY_STATE_NAME).unlink(missing_ok=True)
    return path


# --- reading ----------------------------------------------------------------------

def _read_verified(path: Path) -> tuple[dict[str, Any], str]:
    """The checkpoint at ``path`` as a dict, and the SHA-256 of its bytes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if not data:
        raise CheckpointError(f"{path}: file is empty (corrupt checkpoint)")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many types for damaged files)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {first}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cerberus-cli training checkpoint")
    return obj, hashlib.sha256(data).hexdigest()


def _legacy_state(path: Path, step: int) -> TrainState:
    """The state of a run of an earlier version, kept beside ``last.pt`` in ``last.state.pt``."""
    state_path = path.with_name(LEGACY_STATE_NAME)
    if not state_path.is_file():
        raise CheckpointError(f"{path}: holds no training state and {state_path.name} is missing; "
                              "cannot resume (use --overwrite to start again)")
    try:
        old = torch.load(state_path, map_location="cpu", weights_only=True)
        state = TrainState(step=int(old["step"]), optimizer=dict(old["optimizer"]), scaler=old.get("scaler"),
                           rng={"torch": old["torch_rng"], "cuda": list(old.get("cuda_rng") or [])},
                           best_score=float(old["best_score"]), best_metrics=dict(old["best_metrics"]))
    except Exception as exc:  # noqa: BLE001  (a damaged file gives many error types)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{state_path}: not a readable training state (corrupt?): {first}") from None
    if state.step != step:
        raise CheckpointError(f"{path}: weights are from step {step} but {state_path.name} from step "
                              f"{state.step} (a run interrupted between the two writes); cannot resume exactly "
                              "(use --overwrite to start again)")
    return state


def load_training(path: str | os.PathLike, extra_keys: tuple[str, ...] = ()) -> ResumePoint:
    """Load and verify a training checkpoint written by :func:`save_training`; the
    entries ``extra_keys`` of its ``extra`` come back in :attr:`ResumePoint.extra`.

    Checkpoints of earlier versions (weights in ``last.pt``, state in
    ``last.state.pt``) are accepted when both are from the same step.

    Raises:
        CheckpointError: missing, empty, truncated, corrupt (digest mismatch) or
            inconsistent checkpoints, with a one-line message naming the file.
    """
    path = Path(path)
    obj, sha = _read_verified(path)
    raw_prov = obj.get("provenance")
    prov: dict[str, Any] = raw_prov if isinstance(raw_prov, dict) else {}
    prov_step = (prov.get("training") or {}).get("step")
    if obj.get("training_state") is None:
        if prov_step is None:
            raise CheckpointError(f"{path}: a model checkpoint without training state; cannot resume from it")
        state, legacy = _legacy_state(path, int(prov_step)), True
        log.warning("%s: checkpoint of an earlier version (state in %s); resuming from step %d",
                    path, LEGACY_STATE_NAME, state.step)
    else:
        if obj.get("digest") != content_digest(obj):
            raise CheckpointError(f"{path}: contents do not match the checkpoint's digest (corrupt); "
                                  "cannot resume (use --overwrite to start again)")
        state, legacy = TrainState.from_dict(obj["training_state"], path), False
        if prov_step is not None and int(prov_step) != state.step:
            raise CheckpointError(f"{path}: weights record step {prov_step} but the training state step "
                                  f"{state.step}; cannot resume")
    extra = {k: obj[k] for k in extra_keys if k in obj}
    del obj  # the weights are read again as a model below; free this copy first
    loaded = load_checkpoint(path)
    if loaded.sha256 != sha:
        raise CheckpointError(f"{path}: changed while being read (is another run writing this folder?)")
    return ResumePoint(loaded.model, loaded.provenance, state, sha, legacy, extra)
