"""Faster CPU inference keeps the network's answers: folding exact, int8 close."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cerberus_cli.model.config import light_config
from cerberus_cli.model.fold import conv_bn_pairs, fold_batchnorm
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.model.registry import load_model
from cerberus_cli.synthetic.tiles import render_tile


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters (eval mode)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model.eval()


def phantom_batch(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, side, side) uint8 phantom H&E tiles."""
    tiles = [render_tile(side, seed=seed + i).image.transpose(2, 0, 1) for i in range(n)]
    return torch.from_numpy(np.ascontiguousarray(np.stack(tiles)))


def _agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float((a[k].argmax(1) == b[k].argmax(1)).float().mean())
            for k in a if a[k].dim() == 4}


def test_folding_removes_every_conv_fed_batchnorm_and_keeps_the_outputs():
    model = _random_bn(CerberusNet(light_config()))
    x = phantom_batch(1, 96)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    pairs = conv_bn_pairs(model, x[:1], tissue="dense")
    # Every batch-norm but the tissue head's first (it follows a pooling, not a conv).
    assert sorted(bn for _, bn in pairs) == sorted(b for b in bns if b != "tissue_head.bn1")
    folded, n = fold_batchnorm(model, x[:1], tissue="dense")
    assert n == len(bns) - 1
    left = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert left == ["tissue_head.bn1"]
    assert len([m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]) == len(bns)
    with torch.inference_mode():
        want, got = model(x, tissue="dense"), folded(x, tissue="dense")
    for k in want:
        scale = float(want[k].abs().max())
        assert float((want[k] - got[k]).abs().max()) <= 1e-4 * max(1.0, scale), k
    assert min(_agreement(want, got).values()) >= 0.999


def test_folding_a_conv_output_read_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.other = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + self.other(y)

    class Functional(Twice):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # a read no hook sees: caught by the output check

    x = torch.rand(1, 3, 8, 8)
    for cls in (Twice, Functional):
        model = _random_bn(cls())
        folded, n = fold_batchnorm(model, x)
        assert n == 0 and isinstance(folded.bn, nn.BatchNorm2d)
        assert torch.allclose(folded(x), model(x))


def test_folded_bundled_model_agrees_on_phantom_tiles():
    model = load_model(None).model.eval()
    x = phantom_batch(2, 192, seed=11)
    folded, n = fold_batchnorm(model, x[:1], tissue="dense")
    assert n > 0
    x = x.contiguous(memory_format=torch.channels_last)
    folded = folded.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with torch.inference_mode():
        agree = _agreement(model(x, tissue="dense"), folded(x, tissue="dense"))
    assert min(agree.values()) >= 0.995, agree


# --- each speed option through `cerberus segment` ------------------------------------------

FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2",
        "--no-overlay"]


def _objects(out, name: str = "phantom") -> tuple[set[str], list]:
    import pyarrow.parquet as pq
    import shapely

    t = pq.read_table(out / f"{name}.parquet", columns=["uuid", "task", "geometry"])
    geoms = shapely.from_wkb(t["geometry"].to_numpy(zero_copy_only=False))
    return set(t["uuid"].to_pylist()), list(zip(t["task"].to_pylist(), geoms))


def _matched(a: list, b: list) -> float:
    """Share of the objects of ``a`` with an object of the same task in ``b`` at IoU > 0.5."""
    import shapely

    tree = shapely.STRtree([g for _, g in b])
    hits = 0
    for task, g in a:
        for j in tree.query(g):
            if b[j][0] == task and g.intersection(b[j][1]).area > 0.5 * g.union(b[j][1]).area:
                hits += 1
                break
    return hits / max(1, len(a))


@pytest.fixture(scope="module")
def segmented(phantom_slide, tmp_path_factory):
    """The phantom segmented with and without each CPU speed option."""
    from click.testing import CliRunner

    from cerberus_cli.cli import main

    outs = {}
    for name, extra in (("plain", ["--no-fold-bn"]), ("fold", []), ("int8", ["--quantize", "int8"])):
        out = tmp_path_factory.mktemp(name)
        res = CliRunner().invoke(main, ["-q", "segment", str(phantom_slide), "-o", str(out), *FAST,
                                        *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outs[name] = out
    return outs


def test_fold_bn_gives_the_same_objects(segmented):
    ids_plain, plain = _objects(segmented["plain"])
    ids_fold, fold = _objects(segmented["fold"])
    assert len(plain) > 50
    # Float rounding may move a uint8 probability step on a threshold: a handful of
    # objects at most may change outline (and so id); the rest are the same objects.
    assert len(ids_plain & ids_fold) >= 0.97 * len(ids_plain)
    assert _matched(plain, fold) >= 0.99 and _matched(fold, plain) >= 0.99


def test_int8_keeps_nearly_all_objects(segmented):
    _, plain = _objects(segmented["plain"])
    _, int8 = _objects(segmented["int8"])
    assert _matched(plain, int8) >= 0.9 and _matched(int8, plain) >= 0.9


def test_int8_quantisation_agrees_with_fp32_on_phantom_tiles():
    from cerberus_cli.inference.engine import calibration_batches
    from cerberus_cli.model.quantize import quantize_int8

    model = load_model(None).model.eval()
    q = quantize_int8(model, calibration_batches(), tissue="dense")
    x = phantom_batch(2, 256, seed=21)  # not the calibration tiles
    with torch.inference_mode():
        agree = _agreement(model(x, tissue="dense"), q(x, tissue="dense"))
    # Segmentation maps per pixel; the tissue map has 2 x 8 x 8 cells here (one cell: 0.8 %).
    assert min(v for k, v in agree.items() if k != "tissue") >= 0.99, agree
    assert agree["tissue"] >= 0.97, agree
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in q.modules())


def test_int8_is_refused_off_the_cpu_and_with_compile():
    from cerberus_cli.core.errors import InputError
    from cerberus_cli.inference.options import SegmentOptions

    with pytest.raises((InputError, ValueError)):
        SegmentOptions(quantize="int8", compile=True)
    with pytest.raises((InputError, ValueError)):
        SegmentOptions(quantize="int4")


def test_batch_for_memory_caps_the_batch_to_free_memory():
    from cerberus_cli.inference.engine import batch_for_memory

    gib = 2**30
    assert batch_for_memory(16, 10 * gib, 1 * gib) == 8  # 80 % of 10 GiB holds 8 tiles
    assert batch_for_memory(4, 10 * gib, 1 * gib) == 4   # never above the batch asked for
    assert batch_for_memory(8, 0.5 * gib, 1 * gib) == 1  # at least one tile
    assert batch_for_memory(8, 10 * gib, 0) == 8


def test_cpu_engine_takes_one_tile_at_a_time_with_the_same_maps():
    from cerberus_cli.inference.engine import CPU_TILES_AT_ONCE, Engine

    cfg = light_config()
    model = _random_bn(CerberusNet(cfg))
    x = phantom_batch(3, 64 + 2 * 32, seed=3)
    engine = Engine(model, cfg, torch.device("cpu"), None, margin=32, tile=64, channels_last=False)
    assert engine.max_batch == CPU_TILES_AT_ONCE == 1
    split = engine(x)
    engine.max_batch = None
    whole = engine(x)
    for k in whole.prob:
        assert split.prob[k].shape == (3, 2, 64, 64)
        assert np.abs(split.prob[k].astype(int) - whole.prob[k]).max() <= 1
    for k in whole.types:
        assert (split.types[k] == whole.types[k]).mean() >= 0.999
