"""Tile loading: a Dataset of planned tiles read at the model resolution."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cerberus_cli.core.processes import die_with_parent
from cerberus_cli.inference.tile_plan import Tile


def implausible(rgb: np.ndarray) -> bool:
    """True for a tile that decoded to something no scanner gives for tissue or glass.

    Cheap checks only: a constant block that is neither glass nor black padding, or
    mostly pure primary/secondary colours (stain never saturates every channel apart).
    """
    small = rgb[::8, ::8].astype(np.int16)
    if small.std() < 0.5 and 16 < small.mean() < 230:
        return True
    spread = small.max(axis=2) - small.min(axis=2)
    return bool((spread > 220).mean() > 0.5)


class TileDataset(Dataset):
    """Planned tiles of one slide; item i is (tile index, uint8 CHW tensor, unreadable
    file tiles in its region, whether it decoded to implausible pixels).

    The slide object is pickled into worker processes and re-opens its file there.
    """

    def __init__(self, slide: Any, tiles: list[Tile], mpp: float) -> None:
        self.slide = slide
        self.tiles = tiles
        self.mpp = mpp

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, int, bool]:
        from cerberus_cli.slides import read_scaled

        x, y, w, h = self.tiles[i].input_box
        before = self.slide.read_failures
        rgb = read_scaled(self.slide, x, y, w, h, self.mpp)
        unreadable = self.slide.read_failures - before
        return (i, torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), unreadable,
                implausible(rgb))


def make_loader(
    dataset: TileDataset, batch_size: int, workers: int, pin_memory: bool
) -> DataLoader:
    """Batches in plan order (row-major), read by ``workers`` processes ahead of use."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=die_with_parent if workers else None,
    )
