"""Tile loading: a Dataset of planned tiles read at the model resolution."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cerberus_cli.inference.tiles import Tile


class TileDataset(Dataset):
    """Planned tiles of one slide; item i is (tile index, uint8 CHW tensor).

    The slide object is pickled into worker processes and re-opens its file there.
    """

    def __init__(self, slide: Any, tiles: list[Tile], mpp: float) -> None:
        self.slide = slide
        self.tiles = tiles
        self.mpp = mpp

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        from cerberus_cli.slides import read_scaled

        x, y, w, h = self.tiles[i].input_box
        rgb = read_scaled(self.slide, x, y, w, h, self.mpp)
        return i, torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


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
    )
