"""What made a slide's outputs: the slide's fingerprint, the model and every option that
shapes results.

It is recorded under ``provenance`` in the commit record. The skip check compares it
with the committed record (:func:`differences`), and a re-run checks the slide, mask
and model against it (:mod:`.rerun`). Speed and run-control options stay out
(:func:`is_result_option`), so they may change between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cerberus_cli.core.hashing import file_digest

if TYPE_CHECKING:
    from cerberus_cli.cohort.inputs import SlideInput
    from cerberus_cli.inference.options import SegmentOptions

_MIB = 1 << 20

#: Options that do not change results (how fast, where, how verbose) stay out of provenance.
_NOT_PROVENANCE = {"batch_size", "workers", "post_workers", "overwrite", "fail_fast", "compile",
                   "channels_last", "fold_bn", "device", "max_bad_tiles", "shard", "claim_timeout", "status",
                   "devices", "ray", "ray_cpus"}


def input_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Absolute path, size, mtime and a sha256 of the first and last MiB of a slide file.

    Two slides with the same name but other content differ here; reading 2 MiB keeps
    it cheap for 3 GB slides.
    """
    p = Path(path).resolve()
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        h.update(fh.read(_MIB))
        if st.st_size > 2 * _MIB:
            fh.seek(-_MIB, os.SEEK_END)
        h.update(fh.read(_MIB))
    return {"path": str(p), "size": st.st_size, "mtime": st.st_mtime,
            "sha256_head_tail": h.hexdigest()}


def is_result_option(name: str) -> bool:
    """True when option ``name`` shapes results (False for speed and run-control options)."""
    return name not in _NOT_PROVENANCE


def result_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options that shape the results (post-processing and file layout included)."""
    return {k: v for k, v in options.items() if k not in _NOT_PROVENANCE}


def slide_provenance(item: SlideInput, options: SegmentOptions, model_sha256: str) -> dict[str, Any]:
    """The provenance of ``item``'s outputs: ``input`` (the slide's fingerprint),
    ``model_sha256``, ``options`` (the result-shaping ones, as recorded) and
    ``options_all`` (every option, with ``mpp`` and the mask's digest filled in: what the
    skip check compares; not recorded itself)."""
    opts = options.to_dict()
    opts["mpp"] = item.mpp or options.mpp
    if options.mask:
        opts["mask"] = file_digest(Path(options.mask).resolve()) | {
            "path": str(Path(options.mask).resolve())}
    return {"input": input_fingerprint(item.path), "model_sha256": model_sha256,
            "options": result_options(opts), "options_all": opts}


def differences(record: dict[str, Any], slide: dict[str, Any], model_sha256: str,
                options: dict[str, Any]) -> list[str]:
    """What differs between a commit record and the run about to start (empty: same)."""
    prov = record.get("provenance", {})
    out = []
    old_slide = prov.get("input", {})
    if old_slide.get("size") != slide["size"] or \
            old_slide.get("sha256_head_tail") != slide["sha256_head_tail"]:
        out.append(f"slide content (recorded {old_slide.get('path', '?')})")
    if prov.get("model_sha256") != model_sha256:
        out.append("model")
    # Through JSON, as recorded: tuples become lists, so equal options compare equal.
    old, new = _flat(prov.get("options", {})), _flat(json.loads(json.dumps(result_options(options))))
    # The model is its weights (compared by sha256 above), however --model named it.
    old.pop("model", None)
    new.pop("model", None)
    out += [f"--{k.replace('_', '-')}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return out


def _flat(options: dict[str, Any]) -> dict[str, Any]:
    """Nested option groups (post-processing, writer, tissue) flattened to their flag names."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict) and key != "mask":
            out.update(_flat(value))
        else:
            out[key] = value
    return out
