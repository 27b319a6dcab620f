"""Stain normalisation and per-slide batch-norm adaptation (--stain-norm, --adapt-bn)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cerberus_cli.cli import main
from cerberus_cli.inference.slide_adapt import adapted_batchnorm, sample_tiles
from cerberus_cli.slides.stain_norm import (
    PHANTOM_REFERENCE,
    StainNormaliser,
    fit_reference,
    optical_density,
)
from cerberus_cli.synthetic.tiles import render_tile

FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2"]


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    return [render_tile(256, seed=s).image for s in range(4)]


def _restain(rgb: np.ndarray) -> np.ndarray:
    """The same tissue under another stain: a bluer haematoxylin, paler eosin."""
    od = optical_density(rgb.reshape(-1, 3))
    mix = np.array([[1.05, 0.25, 0.0], [0.05, 0.75, 0.1], [-0.1, 0.05, 1.2]], np.float32)
    out = 256.0 * np.exp(-(od @ mix)) - 1.0
    return np.clip(out, 0, 255).round().astype(np.uint8).reshape(rgb.shape)


def test_phantom_reference_is_the_phantom_stain(tiles):
    fitted = fit_reference(tiles)
    cos = np.sum(np.asarray(fitted.stains) * np.asarray(PHANTOM_REFERENCE.stains), axis=0)
    assert (cos > 0.99).all()
    assert np.allclose(fitted.max_conc, PHANTOM_REFERENCE.max_conc, rtol=0.25)
    assert np.allclose(fitted.lab_mean, PHANTOM_REFERENCE.lab_mean, atol=6)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalisation_undoes_a_stain_change(tiles, method):
    shifted = [_restain(t) for t in tiles]
    norm = StainNormaliser(method, fit_reference(tiles)).fit(shifted)
    before = np.mean([np.abs(s.astype(int) - t).mean() for s, t in zip(shifted, tiles)])
    after = np.mean([np.abs(norm(s).astype(int) - t).mean() for s, t in zip(shifted, tiles)])
    assert after < 0.5 * before, (before, after)
    assert norm(shifted[0]).dtype == np.uint8 and norm(shifted[0]).shape == tiles[0].shape


def test_none_leaves_pixels_and_unknown_method_is_refused(tiles):
    assert StainNormaliser("none").fit(tiles)(tiles[0]) is tiles[0]
    with pytest.raises(ValueError, match="stain normalisation"):
        StainNormaliser("vahadane")
    with pytest.raises(ValueError, match="too few stained"):
        StainNormaliser("macenko").fit([np.full((64, 64, 3), 250, np.uint8)])


def test_adapted_batchnorm_restores_the_model_after():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    net.eval()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, tissue=None):
            return self.net(x.float() / 255)

    model = Wrap()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = [np.full((16, 16, 3), v, np.uint8) for v in (30, 200, 90)]
    with adapted_batchnorm(model, images, 2, torch.device("cpu"), None, channels_last=False) as n:
        assert n == 1
        assert not torch.equal(net[1].running_mean, before["net.1.running_mean"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_sample_tiles_spreads_over_the_plan():
    assert sample_tiles(list(range(10)), 3) == [0, 4, 9]   # type: ignore[arg-type]
    assert sample_tiles(list(range(2)), 5) == [0, 1]        # type: ignore[arg-type]


def test_segment_with_adapt_bn_and_stain_norm(tmp_path, tiles):
    img = tmp_path / "shifted.png"
    big = render_tile(512, seed=7).image
    cv2.imwrite(str(img), cv2.cvtColor(_restain(big), cv2.COLOR_RGB2BGR))
    runs = {}
    for name, extra in (("plain", []), ("adapted", ["--adapt-bn", "2", "--stain-norm", "macenko"])):
        out = tmp_path / name
        res = CliRunner().invoke(main, ["-q", "segment", str(img), "--mpp", "0.5", "-o", str(out),
                                        "--no-overlay", *FAST, *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        runs[name] = json.loads((out / "shifted.run.json").read_text())
    rec = runs["adapted"]
    assert rec["options"]["adapt_bn"] == 2 and rec["options"]["stain_norm"] == "macenko"
    assert rec["timings"]["adapt_s"] > 0
    assert runs["plain"]["options"]["adapt_bn"] == 0 and "adapt_s" not in runs["plain"]["timings"]
    assert rec["objects"] > 0
    res = CliRunner().invoke(main, ["segment", str(img), "-o", str(tmp_path / "x"), "--adapt-bn", "-1"])
    assert res.exit_code != 0 and "adapt_bn" in res.output.replace("-", "_")
