"""``features``: the library function behind ``cerberus features``.

Patches (a patch table or image folders) go to one feature file; grid and object
features (:mod:`.grid`, :mod:`.objects`) go to one file per slide
(``OUT/SLIDE.features.parquet``). A file that exists with the same provenance is
skipped; one with different provenance is refused unless ``overwrite``. What every
kind shares is in :mod:`.extractor`, which none of them imports back.
"""

from __future__ import annotations

import os
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.transfer.extractor import FeaturesSummary, make_extractor, read_rows, should_skip
from cerberus_cli.transfer.featurefile import write_features
from cerberus_cli.transfer.forward import Progress
from cerberus_cli.transfer.grid import extract_grid
from cerberus_cli.transfer.objects import extract_objects
from cerberus_cli.transfer.options import FeaturesOptions
from cerberus_cli.transfer.patches import PatchReader
from cerberus_cli.transfer.table import read_patch_table


def extract_patches(source: str | os.PathLike, output: str | os.PathLike,
                    options: FeaturesOptions, progress: Progress | None = None) -> FeaturesSummary:
    """Features of every row of a patch table (or image-folder tree) into one file."""
    table = read_patch_table(source, options.group_regex, options.allow_group_overlap)
    extractor = make_extractor(options, "patches")
    meta = dict(extractor.meta)
    meta["inputs"] = {"table": str(Path(source).resolve()), "rows": len(table)}
    out = Path(output)
    summary = FeaturesSummary(rows=len(table), dim=extractor.dim)
    if should_skip(out, meta, options.overwrite):
        summary.skipped.append(out)
        return summary
    reader = PatchReader(extractor.encoder.mpp, options.patch_side(extractor.encoder.mpp),
                         options.mpp, options.backend)
    rows = table.to_dict("records")
    feats = read_rows(rows, reader, extractor, progress)
    summary.written.append(write_features(out, table, feats, meta, options.overwrite))
    return summary


def features(inputs: list[str], output: str | os.PathLike, options: FeaturesOptions,
             progress: Progress | None = None) -> FeaturesSummary:
    """Extract features (see ``cerberus features --help``).

    ``inputs``: one patch table or image folder (``kind="patches"``; ``output`` is the
    feature file) or slide files (``grid`` and ``objects``; ``output`` is a folder).
    """
    if not inputs:
        raise InputError("no input given (a patch table, an image folder, or slides)")
    if options.kind == "patches":
        if len(inputs) != 1:
            raise InputError(f"patches: give one table or image folder, got {len(inputs)} inputs")
        return extract_patches(inputs[0], output, options, progress)
    out_dir = Path(output)
    if out_dir.suffix == ".parquet":
        raise InputError(f"{out_dir}: grid and object features go to a folder (one file per slide)")
    out_dir.mkdir(parents=True, exist_ok=True)
    if options.kind == "grid":
        return extract_grid(inputs, out_dir, options, progress)
    return extract_objects(inputs, out_dir, options, progress)

