"""The terms of a model's weights: kept in the checkpoint, shown by `cerberus model`,
logged first by `cerberus segment -v`, and stated for every bundled model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cerberus_cli.cli import main
from cerberus_cli.model.checkpoint import load_checkpoint, save_checkpoint
from cerberus_cli.model.config import light_config
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.model.registry import available_models

TERMS = "non-commercial research use only (test weights)"


@pytest.fixture(scope="module")
def licensed_model(tmp_path_factory):
    torch.manual_seed(0)
    model = CerberusNet(light_config()).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("m") / "licensed.pt",
                           provenance={"licence": {"weights": TERMS, "data": ["a dataset"]}})


def test_licence_travels_in_the_checkpoint_and_cerberus_model_prints_it(licensed_model, tiny_model):
    assert load_checkpoint(licensed_model).licence == TERMS
    assert "not stated" in load_checkpoint(tiny_model).licence
    res = CliRunner().invoke(main, ["model", str(licensed_model)], catch_exceptions=False)
    assert res.exit_code == 0 and f"weights licence: {TERMS}" in " ".join(res.output.split())
    res = CliRunner().invoke(main, ["model", str(licensed_model), "--json"], catch_exceptions=False)
    assert json.loads(res.output)["licence"] == TERMS


def test_every_bundled_model_states_its_weights_terms():
    models = available_models()
    assert {"default", "phantom"} <= set(models)
    assert load_checkpoint(models["phantom"]).licence.startswith("MIT")
    real = load_checkpoint(models["default"]).licence
    assert "non-commercial" in real and "MoNuSeg" in real and "GlaS" in real and "CoNSeP" in real


def test_segment_logs_the_licence_first(licensed_model, tmp_path):
    image = tmp_path / "tile.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(image)
    res = CliRunner().invoke(main, ["-v", "segment", str(image), "--mpp", "0.5", "-o", str(tmp_path / "o"),
                                    "--model", str(licensed_model), "--workers", "0", "--post-workers", "0",
                                    "--no-overlay", "--tile", "208"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert first.startswith("INFO: model ") and f"weights licence: {TERMS}" in first, first
