"""Feature files: Parquet, one row per sample, a ``features`` column and provenance.

The ``features`` column is a fixed-size list of float32 (or float16). The file metadata
key ``cerberus_features`` holds JSON: model name and sha256, layers and their
dimensions, pooling, input size in px and um, mpp, normalisation, dtype, package
version. Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import InputError, first_line

FORMAT = "cerberus-cli/features"
FORMAT_VERSION = 1
META_KEY = b"cerberus_features"
#: Metadata entries that must agree for two feature sets to be "the same features"
#: (paths, times and versions may differ).
PROVENANCE_KEYS = ("model_sha256", "model", "encoder", "stem_stride", "layers", "level_dims",
                   "pooling", "input_px", "mpp", "normalisation", "dtype", "kind", "random_init",
                   "grid", "objects")


def provenance_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``meta`` that define what the features are."""
    return {k: meta.get(k) for k in PROVENANCE_KEYS}


def write_features(path: str | os.PathLike, columns: pd.DataFrame, features: np.ndarray,
                   meta: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a feature file atomically; ``features`` is (N, D) and ``columns`` has N rows."""
    if len(columns) != len(features):
        raise ValueError(f"{len(columns)} rows but {len(features)} feature vectors")
    dtype = np.float16 if meta.get("dtype") == "float16" else np.float32
    feats = np.ascontiguousarray(features, dtype=dtype)
    dim = feats.shape[1] if feats.ndim == 2 else 0
    value_type = pa.float16() if dtype == np.float16 else pa.float32()
    values = pa.array(feats.reshape(-1), type=value_type)
    column = pa.FixedSizeListArray.from_arrays(values, dim)
    table = pa.Table.from_pandas(columns.reset_index(drop=True), preserve_index=False)
    table = table.append_column("features", column)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "dim": int(dim), **meta}
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(full).encode()
    table = table.replace_schema_metadata(schema_meta)
    target = AtomicPath(path, overwrite=overwrite)
    try:
        pq.write_table(table, target.tmp)
        return target.commit()
    except BaseException:
        target.abort()
        raise


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``cerberus_features`` metadata of a feature file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such feature file")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a non-Parquet file
        raise InputError(f"{path}: not a Parquet feature file ({first_line(exc)})") from None
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None or "features" not in schema.names:
        raise InputError(f"{path}: not a cerberus feature file (no 'features' column or metadata)")
    return json.loads(raw)


def read_features(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """(columns, features (N, D) float32, metadata) of a feature file.

    Raises:
        InputError: not a feature file, or features that are NaN or infinite.
    """
    meta = read_meta(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: unreadable feature file ({first_line(exc)})") from None
    names = table.column_names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"{path}: column(s) {', '.join(duplicated)} appear more than once")
    col = table.column("features").combine_chunks()
    dim = int(meta.get("dim", 0))
    flat = col.values.to_numpy(zero_copy_only=False).astype(np.float32)
    feats = flat.reshape(len(col), dim) if dim else np.zeros((len(col), 0), np.float32)
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).argmax())
        raise InputError(f"{path}: NaN or infinite features (first in row {bad})")
    columns = table.drop(["features"]).to_pandas()
    return columns, feats, meta
