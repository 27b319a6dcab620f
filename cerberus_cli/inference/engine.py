"""The batched network engine: uint8 tiles in, cropped and quantised maps out.

Everything that shrinks the data (softmax, centre crop, argmax, uint8 quantisation)
happens on the device, so the host receives ~8 bytes per kept pixel. A batch that
does not fit in GPU memory is split, and the smaller batch size is kept. On a CPU the
network takes the tiles of a batch one at a time (:data:`CPU_TILES_AT_ONCE`): the
activations of four 1024 px tiles of the bundled model peak at 2.4 GB, of one at 0.9 GB
(benchmarks/segment.md), and CPU convolutions gain little from larger batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from cerberus_cli.core.errors import InputError
from cerberus_cli.model.config import ModelConfig
from cerberus_cli.model.device import autocast, prepare_model
from cerberus_cli.model.fold import fold_batchnorm
from cerberus_cli.model.quantize import quantize_int8

log = logging.getLogger(__name__)

#: Tiles the network takes at once on a CPU (a batch is split into parts of this size).
CPU_TILES_AT_ONCE = 1
#: Phantom tiles (seeds, side) the int8 activation ranges are calibrated on.
CALIBRATION_SEEDS = (9001, 9002, 9003, 9004)
CALIBRATION_SIDE = 256


def batch_for_memory(requested: int, free_bytes: float, bytes_per_tile: float,
                     headroom: float = 0.8) -> int:
    """Largest batch (1..``requested``) whose activations fit in ``headroom`` of free memory.

    ``bytes_per_tile``: the peak device memory one tile's forward pass added.
    """
    if bytes_per_tile <= 0:
        return requested
    return max(1, min(requested, int(headroom * free_bytes // bytes_per_tile)))


def calibration_batches(batch_size: int = 2) -> list[torch.Tensor]:
    """Phantom H&E tiles (uint8, B x 3 x H x W) for int8 calibration; always the same."""
    from cerberus_cli.synthetic.tiles import render_tile

    tiles = [render_tile(CALIBRATION_SIDE, seed=s).image.transpose(2, 0, 1) for s in CALIBRATION_SEEDS]
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(tiles)))
    return list(batch.split(batch_size))


def inference_network(network: torch.nn.Module, config: ModelConfig, device: torch.device, *,
                      channels_last: bool = True, fold_bn: bool = True, quantize: str = "none",
                      compile: bool = False) -> torch.nn.Module:
    """The network the engine runs: ``network`` (eval, on ``device``) made faster.

    ``fold_bn`` folds batch-norm into convolutions (exact up to rounding);
    ``quantize="int8"`` quantises the convolutions for the CPU (approximate,
    calibrated on :func:`calibration_batches`); ``compile`` applies torch.compile.
    ``network`` itself is left as it is (per-slide batch-norm adaptation works on it).
    """
    tissue = "dense" if config.heads_of_kind("tissue") else None
    if quantize == "int8":
        if device.type != "cpu":
            raise InputError("--quantize int8 is for CPU inference; use --precision on a GPU")
        model = quantize_int8(network.cpu(), calibration_batches(), tissue=tissue)
    elif fold_bn:
        side = config.total_stride * 4
        example = torch.zeros((1, 3, side, side), dtype=torch.uint8, device=device)
        model, folded = fold_batchnorm(network, example, tissue=tissue)
        log.debug("folded %d batch-norm layers into convolutions", folded)
    else:
        model = network
    return prepare_model(model, device, channels_last, compile)


@dataclass
class BatchMaps:
    """Host-side maps of a batch of tiles, cropped to the kept ``tile`` px.

    ``prob[head]``: (B, 2, T, T) uint8 inner/boundary probability x 255;
    ``types[head]``: (B, T, T) uint8 argmax class; ``tissue``: (B, C, h, w) float16
    dense tissue probabilities over the whole input tile (or None).
    """

    prob: dict[str, np.ndarray]
    types: dict[str, np.ndarray]
    tissue: np.ndarray | None


class Engine:
    """Runs a prepared model on batches of uint8 tiles."""

    def __init__(
        self, model: torch.nn.Module, config: ModelConfig, device: torch.device,
        dtype: torch.dtype | None, margin: int, tile: int, channels_last: bool = True,
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.dtype = dtype
        self.margin = margin
        self.tile = tile
        self.channels_last = channels_last
        self.max_batch: int | None = CPU_TILES_AT_ONCE if device.type == "cpu" else None
        #: On CUDA the first batch measures one tile's memory and caps the batch size.
        self._fit_to_memory = device.type == "cuda"
        self.instance_heads = [h.name for h in config.heads_of_kind("instance")]
        self.type_heads = [h.name for h in config.heads_of_kind("type")]
        self.has_tissue = bool(config.heads_of_kind("tissue"))

    def __call__(self, images: torch.Tensor) -> BatchMaps:
        """Maps for a (B, 3, H, W) uint8 batch; splits it after a CUDA OOM."""
        if self._fit_to_memory:
            self._fit_to_memory = False
            return self._fit_batch(images)
        if self.max_batch is not None and images.shape[0] > self.max_batch:
            return _concat([self(part) for part in images.split(self.max_batch)])
        try:
            return self._forward(images)
        except torch.cuda.OutOfMemoryError:
            if images.shape[0] == 1:
                raise
            torch.cuda.empty_cache()
            self.max_batch = max(1, images.shape[0] // 2)
            log.warning("GPU out of memory: batch size reduced to %d", self.max_batch)
            return self(images)

    def _fit_batch(self, images: torch.Tensor) -> BatchMaps:
        """Run one tile alone, measuring its peak GPU memory; cap the batch to free memory."""
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        first = self._forward(images[:1])
        per_tile = torch.cuda.max_memory_allocated(self.device) - base
        free, _ = torch.cuda.mem_get_info(self.device)
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        self.max_batch = batch_for_memory(images.shape[0], free + cached, per_tile)
        log.info("GPU: %.0f MiB per tile, batch size up to %d", per_tile / 2**20, self.max_batch)
        if images.shape[0] == 1:
            return first
        return _concat([first, self(images[1:])])

    @torch.inference_mode()
    def _forward(self, images: torch.Tensor) -> BatchMaps:
        x = images.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.dtype):
            out = self.model(x, tissue="dense" if self.has_tissue else None)
        m, t = self.margin, self.tile
        prob, types = {}, {}
        for name in self.instance_heads:
            p = out[name].float().softmax(1)[:, 1:3, m:m + t, m:m + t]
            prob[name] = (p * 255).round_().to(torch.uint8)
        for name in self.type_heads:
            types[name] = out[name][:, :, m:m + t, m:m + t].argmax(1).to(torch.uint8)
        tissue = None
        if self.has_tissue:
            tissue = out[self.config.heads_of_kind("tissue")[0].name].float().softmax(1).half()
        # One synchronising copy per batch.
        return BatchMaps(
            {k: v.cpu().numpy() for k, v in prob.items()},
            {k: v.cpu().numpy() for k, v in types.items()},
            None if tissue is None else tissue.cpu().numpy(),
        )


def _concat(parts: list[BatchMaps]) -> BatchMaps:
    return BatchMaps(
        {k: np.concatenate([p.prob[k] for p in parts]) for k in parts[0].prob},
        {k: np.concatenate([p.types[k] for p in parts]) for k in parts[0].types},
        None if parts[0].tissue is None else np.concatenate([p.tissue for p in parts]),
    )
