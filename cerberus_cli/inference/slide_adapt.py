"""Per-slide adaptation before segmenting: stain normalisation and batch-norm statistics.

Both are fitted on a few of the slide's own planned tiles (evenly spread over the
plan): the stain normaliser learns the slide's stain (``--stain-norm``), and AdaBN
(``--adapt-bn N``, Mormont et al.'s domain-shift fix) replaces the network's
batch-norm running statistics by those of N tiles of the slide. The network's own
statistics come back when the slide ends, so every slide starts from the model as
loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from cerberus_cli.inference.loader import TileDataset
from cerberus_cli.inference.tile_plan import Tile
from cerberus_cli.model.bn_adapt import reestimate_batchnorm
from cerberus_cli.slides.stain_norm import StainNormaliser

#: Tiles the stain is fitted on when --adapt-bn does not ask for more.
STAIN_FIT_TILES = 8
#: Tiles per batch-norm estimation batch: fixed, so --batch-size (a speed option) does
#: not change the statistics (a cumulative average of per-batch moments).
ADAPT_BATCH = 4


def sample_tiles(tiles: list[Tile], n: int) -> list[Tile]:
    """``n`` tiles evenly spread over the plan (all of them when there are fewer)."""
    if n >= len(tiles):
        return list(tiles)
    idx = np.linspace(0, len(tiles) - 1, n).round().astype(int)
    return [tiles[i] for i in np.unique(idx)]


def read_tiles(slide: Any, tiles: list[Tile], mpp: float) -> list[np.ndarray]:
    """The network inputs of ``tiles`` as uint8 RGB arrays (H, W, 3)."""
    ds = TileDataset(slide, tiles, mpp)
    return [ds[i][1].numpy().transpose(1, 2, 0) for i in range(len(ds))]


def normalise_batch(normaliser: StainNormaliser, images: torch.Tensor) -> torch.Tensor:
    """Apply a fitted normaliser to a (B, 3, H, W) uint8 batch."""
    if normaliser.method == "none":
        return images
    out = [torch.from_numpy(np.ascontiguousarray(normaliser(img.numpy().transpose(1, 2, 0)).transpose(2, 0, 1)))
           for img in images]
    return torch.stack(out)


def _bn_buffers(model: nn.Module) -> list[tuple[nn.BatchNorm2d, dict[str, torch.Tensor]]]:
    return [(m, {k: getattr(m, k).clone() for k in ("running_mean", "running_var", "num_batches_tracked")})
            for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]


@contextmanager
def adapted_batchnorm(model: nn.Module, images: list[np.ndarray], batch_size: int,
                      device: torch.device, tissue: str | None,
                      channels_last: bool = True) -> Iterator[int]:
    """Within the block, ``model``'s batch-norm statistics are those of ``images``
    (uint8 RGB network inputs, already stain-normalised if that is asked for); yields
    the number of layers re-estimated and restores the model's own statistics after."""
    saved = _bn_buffers(model)

    def forward(batch: torch.Tensor) -> Any:
        x = batch.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x, tissue=tissue)

    def batches() -> Iterator[torch.Tensor]:
        for i in range(0, len(images), batch_size):
            yield torch.from_numpy(np.stack([im.transpose(2, 0, 1) for im in images[i:i + batch_size]]))

    try:
        with torch.no_grad():
            layers = reestimate_batchnorm(model, forward, batches())
        yield layers
    finally:
        with torch.no_grad():
            for bn, buffers in saved:
                for name, value in buffers.items():
                    getattr(bn, name).copy_(value)
