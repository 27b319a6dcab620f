"""Re-run a slide from its commit record (``cerberus segment --rerun S.run.json``).

The record holds everything that shaped the outputs: the slide's absolute path and
fingerprint, the model's sha256 and every option (``options``, nested ``post``,
``writer`` and ``tissue`` groups). :func:`options_from_record` rebuilds the
:class:`SegmentOptions` from it and refuses when the slide, the mask or the model
is no longer the one the record names, so a re-run reproduces the outputs (same
object ids) or does not start. Options that only change speed or run control
(workers, batch size, device...) may be given anew.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from cerberus_cli.cohort import commit
from cerberus_cli.cohort.provenance import input_fingerprint, is_result_option
from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.core.hashing import file_digest, file_sha256
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.model.registry import resolve_model

T = TypeVar("T")

#: Run-control options a re-run never takes from the record: it replaces the record's
#: own outputs only when asked, and it is one slide (no shard of a list).
_RESET = {"overwrite": False, "shard": None}


def options_from_record(path: str | os.PathLike,
                        overrides: Mapping[str, Any] | None = None) -> tuple[Path, SegmentOptions]:
    """The slide and the options of the run recorded in commit record ``path``.

    ``overrides`` (field name -> value) replaces options that do not change results
    (see :func:`~.provenance.is_result_option`); overriding any other option is refused, as a
    re-run with other results would not be a re-run.

    Raises:
        InputError: the record is unreadable or not a commit record; an override
            shapes results; the slide, its mask or the model differs from the
            recorded one (one line naming the record).
    """
    record_file = Path(path)
    record = _read(record_file)
    prov = record["provenance"]
    slide = Path(prov["input"]["path"])
    where = f"{record_file}: cannot re-run"
    overrides = dict(overrides or {})
    if "shard" in overrides:
        raise InputError(f"{where}: --shard does not apply to --rerun (one slide)")
    shaping = sorted(k for k in overrides if is_result_option(k))
    if shaping:
        flags = ", ".join("--" + k.replace("_", "-") for k in shaping)
        raise InputError(f"{where}: {flags} cannot be given with --rerun (the record fixes "
                         "every option that shapes results; only speed options may change)")
    values = dict(record["options"])
    recorded = prov.get("options", {})
    # The record keeps the resolution and mask the run used, resolved (absolute mask path).
    values["mpp"] = recorded.get("mpp", values.get("mpp"))
    if isinstance(recorded.get("mask"), dict):
        values["mask"] = _checked_mask(recorded["mask"], where)
    values.update(_RESET)
    values.update(overrides)
    values["model"] = _model_spec(values.get("model"), record, where)
    try:
        options = _build(SegmentOptions, values, where)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: its options do not fit this version ({exc})") from None
    _check_slide(slide, prov["input"], where)
    return slide, options


def _read(path: Path) -> dict[str, Any]:
    """The commit record at ``path``, checked for the sections a re-run needs."""
    try:
        record = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the run record ({exc.strerror or exc})") from None
    except ValueError:
        raise InputError(f"{path}: not a run record (not JSON)") from None
    if not isinstance(record, dict) or record.get("format") != commit.RECORD_FORMAT:
        raise InputError(f"{path}: not a cerberus run record (S.run.json)")
    prov = record.get("provenance")
    if record.get("format_version") != commit.RECORD_VERSION or not isinstance(prov, dict) or \
            not isinstance(prov.get("input"), dict) or "path" not in prov["input"] or \
            not isinstance(record.get("options"), dict) or "model_sha256" not in prov:
        raise InputError(f"{path}: run record of another version (format_version "
                         f"{record.get('format_version')}); it cannot be re-run")
    return record


def _model_spec(spec: str | None, record: dict[str, Any], where: str) -> str | None:
    """The ``--model`` value that names the recorded model here, checked by its sha256.

    A relative model path is tried as given, then from the recorded run's working folder.
    """
    want = record["provenance"]["model_sha256"]
    tries: list[str | None] = [spec]
    cwd = record.get("run", {}).get("cwd")
    if spec is not None and cwd and not Path(spec).is_absolute():
        tries.append(str(Path(cwd) / spec))
    found: str | None = None
    for candidate in tries:
        try:
            model_path = resolve_model(candidate)
        except CerberusError:
            continue
        if file_sha256(model_path) == want:
            return candidate
        found = str(model_path)
    if found is not None:
        raise InputError(f"{where}: model {found} is not the recorded one (sha256 differs)")
    raise InputError(f"{where}: the recorded model {spec or 'default'!s} is not found")


def _checked_mask(mask: dict[str, Any], where: str) -> str:
    """The recorded mask's absolute path, when the file there is still the same."""
    mask_path = Path(mask.get("path", ""))
    try:
        digest = file_digest(mask_path)
    except OSError:
        raise InputError(f"{where}: the recorded mask {mask_path} is missing") from None
    if digest["sha256"] != mask.get("sha256"):
        raise InputError(f"{where}: mask {mask_path} has changed since the run (sha256 differs)")
    return str(mask_path)


def _check_slide(slide: Path, recorded: dict[str, Any], where: str) -> None:
    """Refuse a slide that is missing or whose fingerprint is not the recorded one."""
    try:
        now = input_fingerprint(slide)
    except OSError:
        raise InputError(f"{where}: the recorded slide {slide} is missing") from None
    if (now["size"], now["sha256_head_tail"]) != (recorded.get("size"),
                                                  recorded.get("sha256_head_tail")):
        raise InputError(f"{where}: slide {slide} has changed since the run (fingerprint differs)")


def _build(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """An options dataclass from its ``to_dict()`` form (nested groups as dicts)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"{where}: options unknown to this version: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            kwargs[name] = _build(kind, value or {}, where)
        else:
            # JSON has no tuples: tuple-valued options come back as lists.
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)
