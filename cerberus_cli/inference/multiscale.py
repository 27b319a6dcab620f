"""``--save-maps``: the map store as a multiscale zarr for inspection.

Level 0 is the model-resolution map; each further level halves it (mean for
probabilities, nearest for class ids) until the long side is under 1024 px. The
group carries OME-NGFF-style ``multiscales`` metadata so viewers find the levels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from cerberus_cli.inference.mapstore import MapStore

_BLOCK = 4096


def write_multiscale(store: MapStore, path: str | Path, min_side: int = 1024) -> Path:
    """Copy ``store`` into a new multiscale zarr group at ``path``, block by block."""
    out = zarr.open_group(str(path), mode="w")
    arrays = [(f"prob/{n}", True) for n in store.instance_heads]
    arrays += [(f"type/{n}", False) for n in store.type_heads]
    levels = 1
    while max(store.width, store.height) >> (levels - 1) > min_side:
        levels += 1
    for name, is_prob in arrays:
        src = store.group[name]
        for level in range(levels):
            f = 1 << level
            shape = src.shape[:-2] + (-(-src.shape[-2] // f), -(-src.shape[-1] // f))
            dst = out.create_array(f"{name}/{level}", shape=shape, chunks=src.shape[:-2] + (512, 512),
                                   dtype="uint8", fill_value=0)
            for y in range(0, src.shape[-2], _BLOCK):
                for x in range(0, src.shape[-1], _BLOCK):
                    block = src[..., y:y + _BLOCK, x:x + _BLOCK]
                    dst[..., y // f:(y + block.shape[-2]) // f, x // f:(x + block.shape[-1]) // f] = \
                        _reduce(block, f, is_prob)
        out[name].attrs["multiscales"] = [{
            "version": "0.4", "name": name,
            "axes": ([{"name": "c", "type": "channel"}] if is_prob else [])
            + [{"name": "y", "type": "space", "unit": "micrometer"},
               {"name": "x", "type": "space", "unit": "micrometer"}],
            "datasets": [{"path": str(level), "coordinateTransformations": [
                {"type": "scale", "scale": ([1.0] if is_prob else [])
                 + [store.mpp * (1 << level)] * 2}]} for level in range(levels)],
        }]
    out.attrs.update({"mpp": store.mpp, "probability_scale": 1 / 255,
                      "channels": ["inner", "boundary"]})
    return Path(path)


def _reduce(block: np.ndarray, f: int, mean: bool) -> np.ndarray:
    if f == 1:
        return block
    h, w = block.shape[-2] // f * f, block.shape[-1] // f * f
    b = block[..., :h, :w]
    if not mean:
        return b[..., ::f, ::f]
    r = b.reshape(b.shape[:-2] + (h // f, f, w // f, f)).mean(axis=(-3, -1))
    return np.round(r).astype(np.uint8)
