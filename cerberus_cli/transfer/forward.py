"""One place where patches meet the network: batches in, pooled feature vectors out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from cerberus_cli.model.device import autocast
from cerberus_cli.transfer.loaded_encoder import Encoder
from cerberus_cli.transfer.pooling import global_pool

#: ``progress(done, total)``: called after every batch; the library never prints.
Progress = Callable[[int, int], None]


def to_tensor(patches: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(B, 3, H, W) uint8 on ``device`` from equal-sized (H, W, 3) arrays."""
    batch = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).contiguous()
    return batch.to(device, non_blocking=True)


@dataclass
class PooledForward:
    """Encoder + levels + pooling on one device and precision."""

    encoder: Encoder
    layers: tuple[str, ...]
    pooling: str
    device: torch.device
    dtype: torch.dtype | None

    def __call__(self, patches: list[np.ndarray]) -> np.ndarray:
        """Pooled, concatenated features (B, D) float32 of patches of any sizes."""
        out: list[np.ndarray | None] = [None] * len(patches)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(patches):
            by_shape.setdefault(p.shape, []).append(i)
        for idx in by_shape.values():
            maps = self.maps([patches[i] for i in idx])
            pooled = torch.cat([global_pool(maps[name].float(), self.pooling)
                                for name in self.layers], dim=1).cpu().numpy()
            for row, i in zip(pooled, idx):
                out[i] = row
        return np.stack(out).astype(np.float32)  # type: ignore[arg-type]

    def maps(self, patches: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Feature maps of equal-sized patches at the chosen levels."""
        with autocast(self.device, self.dtype):
            return self.encoder.maps(to_tensor(patches, self.device), self.layers)


def pooled_features(items: Iterable[list[tuple[int, np.ndarray]]], total: int, dim: int,
                    forward: PooledForward, progress: Progress | None = None) -> np.ndarray:
    """Features (total, dim) from batches of ``(row index, patch)``; ``dim`` is the
    width of one pooled, concatenated row (the run's ``level_dims`` summed)."""
    feats = np.zeros((total, dim), np.float32)
    done = 0
    for batch in items:
        idx = [i for i, _ in batch]
        feats[idx] = forward([p for _, p in batch])
        done += len(batch)
        if progress is not None:
            progress(done, total)
    return feats
