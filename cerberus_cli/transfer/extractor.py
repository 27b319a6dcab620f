"""The extractor every kind of ``features`` run shares: the encoder (and, for decoder
levels, its network) on its device, the run's metadata, the skip check of existing
feature files, and patch rows to features."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from cerberus_cli import __version__
from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.model.device import resolve_device, resolve_precision
from cerberus_cli.transfer.decoder_levels import (
    LevelForward,
    default_layers,
    level_dims,
    load_network,
    needs_decoders,
    split_level,
)
from cerberus_cli.transfer.featurefile import provenance_of, read_meta
from cerberus_cli.transfer.forward import Progress, pooled_features
from cerberus_cli.transfer.loaded_encoder import Encoder, load_encoder
from cerberus_cli.transfer.options import FeaturesOptions
from cerberus_cli.transfer.patches import PatchDataset, PatchReader, collate


@dataclass
class FeaturesSummary:
    """What a ``features`` run did: files written, skipped (same provenance), rows, dim."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    rows: int = 0
    dim: int = 0


@dataclass
class Extractor:
    """The encoder (and, for decoder levels, its network) on its device with the
    metadata every feature file of a run carries."""

    encoder: Encoder
    forward: LevelForward
    meta: dict[str, Any]
    options: FeaturesOptions

    @property
    def layers(self) -> tuple[str, ...]:
        """The levels of this run (``--layers``, or the default of its kind and model)."""
        return tuple(self.meta["layers"])

    @property
    def dim(self) -> int:
        return int(sum(self.meta["level_dims"].values()))


def make_extractor(options: FeaturesOptions, kind: str) -> Extractor:
    """Load the encoder of ``options`` and describe the features it will give."""
    encoder = load_encoder(options.model, random_seed=options.random_init,
                           torchvision_mpp=options.state_dict_mpp,
                           torchvision_stem=options.state_dict_stem,
                           torchvision_normalisation=options.state_dict_norm)
    layers = options.layers
    network = None
    if needs_decoders(layers or ()) or (layers is None and kind == "objects"
                                       and encoder.bridge is not None):
        # Decoder levels, or the object default (which depends on the model's heads).
        network = load_network(options.model, options.random_init, encoder, layers or ())
    if layers is None:
        layers = default_layers(kind, tuple(network.seg_heads) if network is not None else (), encoder)
    encoder.check_layers(tuple(n for n in layers if split_level(n) is None))
    device = resolve_device(options.device)
    dtype = resolve_precision(options.precision, device)
    side = options.patch_side(encoder.mpp)
    meta = {
        "kind": kind,
        "model": encoder.name,
        "model_sha256": encoder.sha256,
        "model_source": encoder.source,
        "encoder": encoder.arch,
        "stem_stride": encoder.stem_stride,
        "random_init": options.random_init,
        "layers": list(layers),
        "level_dims": level_dims(layers, options.pooling, encoder.level_channels()),
        "pooling": options.pooling,
        "input_px": side,
        "input_um": None if side is None else side * encoder.mpp,
        "mpp": encoder.mpp,
        "normalisation": encoder.normalisation,
        "dtype": "float16" if options.half else "float32",
        "precision": str(dtype).removeprefix("torch.") if dtype is not None else "float32",
        "package_version": __version__,
    }
    encoder.to(device)
    if network is not None:
        network.to(device)
    forward = LevelForward(encoder, layers, options.pooling, device, dtype, network)
    return Extractor(encoder, forward, meta, options)


def should_skip(path: Path, meta: dict[str, Any], overwrite: bool) -> bool:
    """True when ``path`` holds features of the same provenance and inputs.

    Raises:
        CerberusError: ``path`` exists with other features and ``overwrite`` is off.
    """
    if not path.exists():
        return False
    try:
        old = read_meta(path)
    except InputError:
        old = {}
    same = (provenance_of(old) == provenance_of(meta)
            and old.get("inputs") == meta.get("inputs"))
    if same:
        return True
    if not overwrite:
        raise CerberusError(f"{path}: exists with features of other provenance or inputs "
                            "(--overwrite to replace it)")
    return False


def read_rows(rows: list[dict[str, Any]], reader: PatchReader, extractor: Extractor,
              progress: Progress | None) -> np.ndarray:
    """Features of the patches of ``rows`` (read by worker processes)."""
    forward = extractor.forward
    opts = extractor.options
    workers = min(opts.workers, max(0, len(rows) // max(1, opts.batch_size)))
    # Forked workers must not inherit an initialised CUDA context.
    context = "spawn" if workers and forward.device.type == "cuda" else None
    loader = DataLoader(PatchDataset(rows, reader), batch_size=opts.batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate, multiprocessing_context=context,
                        pin_memory=forward.device.type == "cuda")

    def batches():
        for batch in loader:
            for _, _, err in batch:
                if err is not None:
                    raise InputError(err)
            yield [(i, p) for i, p, _ in batch]

    return pooled_features(batches(), len(rows), extractor.dim, forward, progress)


def slide_output(out_dir: Path, slide: str | os.PathLike) -> Path:
    """Feature file of one slide: ``OUT/<slide stem>.features.parquet``."""
    return out_dir / f"{Path(slide).stem}.features.parquet"
