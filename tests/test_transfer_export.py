"""export-encoder: torchvision key layout, sidecar, identical features when loaded back."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.model.registry import load_model
from cerberus_cli.model.resnet import ResNetEncoder


def test_exported_encoder_loads_and_gives_identical_features(tmp_path):
    out = tmp_path / "encoder.pt"
    res = CliRunner().invoke(main, ["export-encoder", "-o", str(out)])
    assert res.exit_code == 0, res.output
    state = torch.load(out, weights_only=True)
    side = json.loads((tmp_path / "encoder.json").read_text())
    assert "conv1.weight" in state and "layer1.0.conv1.weight" in state
    assert not any(k.startswith("fc.") for k in state)
    loaded = load_model(None)
    assert side["stem_stride"] == loaded.config.stem_stride and side["mpp"] == loaded.config.mpp
    assert side["normalisation"] == "rgb/255" and side["source_model"]["sha256"] == loaded.sha256
    enc = ResNetEncoder(side["arch"], side["stem_stride"])
    enc.load_state_dict(state, strict=True)
    enc.eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ours = loaded.model.encoder(x)
        theirs = enc(x)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # Refuses to overwrite; --overwrite replaces both files.
    res = CliRunner().invoke(main, ["export-encoder", "-o", str(out)])
    assert res.exit_code == 2 and "already exists" in res.output
    res = CliRunner().invoke(main, ["export-encoder", "-o", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
