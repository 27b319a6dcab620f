"""Object features pool exactly under each object's mask, and decoder levels are the
network's own maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shapely.affinity import translate

from cerberus_cli.core.errors import InputError
from cerberus_cli.model.device import resolve_device
from cerberus_cli.postprocess.polygons import mask_polygon
from cerberus_cli.transfer.decoder_levels import (
    LevelForward,
    default_layers,
    level_dims,
    load_network,
    split_level,
)
from cerberus_cli.transfer.loaded_encoder import load_encoder
from cerberus_cli.transfer.objects import object_mask, pool_object


def two_objects(shape=(48, 56)):
    """Label map (tile px) with an ellipse (1) and a bar (2) that touch no edge."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    labels[((yy - 17.3) / 6.2) ** 2 + ((xx - 21.6) / 4.1) ** 2 <= 1] = 1
    labels[30:33, 35:47] = 2
    return labels


@pytest.mark.parametrize("s,origin", [(1.0, (0, 0)), (2.0, (-8, 5)), (1.0, (13, -3))])
def test_pooled_value_is_one_inside_its_object_and_zero_outside(s, origin):
    labels = two_objects()
    factor = int(s)
    # The objects as segment writes them: level-0 polygons on pixel edges.
    level0 = np.kron(labels, np.ones((factor, factor), np.int32))
    polys = {k: translate(mask_polygon(level0 == k), origin[0] * s, origin[1] * s) for k in (1, 2)}
    inside_one = torch.from_numpy((labels == 1).astype(np.float32))[None]     # (1, H, W)
    constant = torch.full((3, labels.shape[0] // 4, labels.shape[1] // 4), 2.5)
    for k, expected in ((1, 1.0), (2, 0.0)):
        mask, top, left = object_mask(polys[k], origin, s, block=4)
        # The mask is the object's pixels, no more, no less.
        window = np.zeros_like(labels, bool)
        window[top:top + mask.shape[0], left:left + mask.shape[1]] = mask
        assert np.array_equal(window, labels == k)
        cy, cx = np.argwhere(labels == k).mean(axis=0)
        f = pool_object([inside_one, constant], [1, 4], mask, top, left, (cx, cy), "avgmax")
        assert f.shape == (2 + 6,)
        assert f[0].item() == pytest.approx(expected) and f[1].item() == pytest.approx(expected)
        assert torch.allclose(f[2:], torch.tensor(2.5))


def test_object_beyond_the_map_takes_the_cell_of_its_centre():
    fmap = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    mask = np.zeros((4, 4), bool)          # covers no pixel centre
    f = pool_object([fmap], [1], mask, 0, 0, (2.4, 1.7), "avg")
    assert f.item() == fmap[0, 1, 2].item()


def test_level_names_dims_and_defaults():
    encoder = load_encoder(None)
    assert split_level("nuclei_type.hidden") == ("nuclei_type", "hidden")
    assert split_level("layer4") is None and split_level("nuclei_type.layer4") is None
    assert level_dims(("layer4", "nuclei_type.dec1", "gland.dec4", "nuclei_type.hidden"), "avgmax",
                      encoder.level_channels()) == {
        "layer4": 1024, "nuclei_type.dec1": 256, "gland.dec4": 128, "nuclei_type.hidden": 192}
    assert default_layers("patches", ("nuclei_type",), encoder) == ("layer2", "layer3", "layer4")
    assert default_layers("objects", ("nuclei", "nuclei_type"), encoder) == (
        "nuclei_type.hidden", "layer3", "layer4")
    assert default_layers("objects", (), encoder) == ("layer2", "layer3", "layer4")


def test_decoder_levels_are_the_networks_own_maps():
    encoder = load_encoder(None)
    layers = ("layer2", "nuclei_type.dec3", "nuclei_type.hidden")
    net = load_network(None, None, encoder, layers)
    fwd = LevelForward(encoder, layers, "avg", resolve_device("cpu"), None, net)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    maps = fwd.maps(images)
    # Patch and grid features pool the same levels globally.
    dims = level_dims(layers, "avg", encoder.level_channels())
    assert fwd(images).shape == (1, sum(dims.values())) == (1, 128 + 64 + 96)
    stride = encoder.stem_stride
    assert maps["nuclei_type.hidden"].shape == (1, 96, 64 // stride, 64 // stride)
    assert maps["nuclei_type.dec3"].shape == (1, 64, 64 // (2 * stride), 64 // (2 * stride))
    with torch.no_grad():
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        logits = net(x, heads=["nuclei_type"], tissue=None)["nuclei_type"]
        again = net.heads["nuclei_type"][1](maps["nuclei_type.hidden"])
        again = F.interpolate(again, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(again, logits, atol=1e-4)


def test_decoder_levels_need_the_head():
    encoder = load_encoder(None)
    with pytest.raises(InputError, match="no head lumen_type"):
        load_network(None, None, encoder, ("lumen_type.hidden",))
