"""The encoder seam: a kind of encoder registered by one line is a whole Cerberus network,
and the one list of encoder names is what the configuration and the CLI accept."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cerberus_cli.cli import main
from cerberus_cli.core.optionspec import spec_of
from cerberus_cli.model.checkpoint import load_checkpoint, save_checkpoint
from cerberus_cli.model.config import ModelConfig, cerberus_heads
from cerberus_cli.model.encoder import KINDS, build_encoder, encoder_names, identify_state
from cerberus_cli.model.encoder_protocol import EncoderGeometry, FeatureEncoder
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.model.resnet import RESNETS, ResNetEncoder
from cerberus_cli.transfer.loaded_encoder import load_encoder
from cerberus_cli.transfer.tuning_options import PretrainOptions

#: A plain convolution pyramid: no residual blocks, its own level names.
TINY_CHANNELS = (64, 64, 128, 256, 96)
TINY_LEVELS = ("p1", "p2", "p3", "p4", "p5")


class TinyPyramid(FeatureEncoder):
    def __init__(self, stem_stride: int) -> None:
        super().__init__()
        self.arch = "tiny-pyramid"
        self.geometry = TinyKind().geometry(self.arch, stem_stride)
        ins = (3, *TINY_CHANNELS[:-1])
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, stem_stride if i == 0 else 2, 1), nn.ReLU())
            for i, (cin, cout) in enumerate(zip(ins, TINY_CHANNELS)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class TinyKind:
    names = ("tiny-pyramid",)
    key_layout = "stages.<level>.0 (conv), no classifier"

    def geometry(self, name: str, stem_stride: int) -> EncoderGeometry:
        return EncoderGeometry(TINY_LEVELS, tuple(stem_stride * 2 ** i for i in range(5)),
                               TINY_CHANNELS)

    def build(self, name: str, stem_stride: int, with_fc: bool = False) -> FeatureEncoder:
        return TinyPyramid(stem_stride)

    def identify(self, state: Mapping[str, Any]) -> str | None:
        return "tiny-pyramid" if "stages.4.0.weight" in state else None


@pytest.fixture
def tiny_kind(monkeypatch):
    """The tiny kind registered as a new kind would be: one line in ``KINDS``."""
    monkeypatch.setitem(KINDS, "tiny", TinyKind())
    return "tiny-pyramid"


def test_a_registered_kind_builds_runs_saves_and_transfers(tiny_kind, tmp_path):
    assert tiny_kind in encoder_names()
    torch.manual_seed(0)
    config = ModelConfig(encoder=tiny_kind, stem_stride=2, heads=cerberus_heads(), name="tiny")
    net = CerberusNet(config).eval()
    assert config.total_stride == 32 and config.tissue_crop == 144 // 32
    assert net.encoder.levels == TINY_LEVELS and net.bridge.in_channels == 96
    images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    with torch.no_grad():
        out = net(images)
        dense = net(images, tissue="dense")["tissue"]
    assert out["nuclei"].shape == (2, 3, 96, 96) and out["nuclei_type"].shape == (2, 7, 96, 96)
    assert out["tissue"].shape == (2, 9) and dense.shape[:2] == (2, 9)
    # The checkpoint names the encoder; loading it builds the same network back.
    path = save_checkpoint(net, tmp_path / "tiny.pt")
    loaded = load_checkpoint(path)
    assert loaded.config.encoder == tiny_kind
    with torch.no_grad():
        again = loaded.model(images)
    assert all(torch.equal(out[k], again[k]) for k in out)
    # features sees the kind's own levels, their strides and widths.
    enc = load_encoder(str(path))
    assert enc.levels() == (*TINY_LEVELS, "bridge") and enc.default_levels() == TINY_LEVELS[-3:]
    assert enc.stride("p3") == 8 and enc.level_channels()["p5"] == 96
    maps = enc.maps(images, ("p2", "bridge"))
    assert maps["p2"].shape == (2, 64, 24, 24) and maps["bridge"].shape == (2, 256, 3, 3)
    # A plain state dict of the kind is recognised by its keys.
    plain = build_encoder(tiny_kind, 2).state_dict()
    assert identify_state(plain) == tiny_kind
    torch.save(plain, tmp_path / "plain.pt")
    from_file = load_encoder(str(tmp_path / "plain.pt"), torchvision_normalisation="rgb/255")
    assert from_file.arch == tiny_kind and from_file.levels() == TINY_LEVELS


def test_segmentation_heads_need_decoder_skips(tiny_kind):
    # resnet50's levels are too wide for the decoders' skips; a tissue-only model is fine.
    with pytest.raises(ValueError, match="no segmentation heads"):
        ModelConfig(encoder="resnet50", heads=cerberus_heads())
    tissue_only = ModelConfig(encoder="resnet50", heads=cerberus_heads()[-1:])
    net = CerberusNet(tissue_only).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))["tissue"].shape == (1, 9)
    assert net.tissue_head is not None and net.tissue_head.bn1.num_features == 2048


def test_the_one_list_of_names_is_what_config_and_cli_accept(tmp_path):
    names = encoder_names()
    assert names == tuple(RESNETS)  # the built-in kinds: the ResNets of resnet.py
    arch = next(f for f in dataclasses.fields(PretrainOptions) if f.name == "arch")
    assert spec_of(arch).choices == names
    for name in names:
        assert ModelConfig(encoder=name).encoder == name
        assert isinstance(build_encoder(name, 2), ResNetEncoder)
    with pytest.raises(ValueError, match="unknown encoder 'vit-b'; choose from " + ", ".join(names)):
        ModelConfig(encoder="vit-b")
    res = CliRunner().invoke(main, ["pretrain", "-o", str(tmp_path / "run"), "--data", "x.csv",
                                    "--arch", "vit-b"])
    assert res.exit_code == 2 and all(n in res.output for n in names), res.output
    assert not (tmp_path / "run").exists()


def test_resnet_identification_follows_the_table():
    for name in RESNETS:
        assert identify_state(ResNetEncoder(name).state_dict()) == name
    assert identify_state({"conv1.weight": torch.zeros(1)}) is None
    assert np.array_equal(ResNetEncoder("resnet34", 1).strides, (1, 2, 4, 8, 16))
