"""``cerberus train --init`` from a ``cerberus pretrain`` result, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.model.checkpoint import load_checkpoint
from cerberus_cli.training.model_init import build_model
from tests._train_fixtures import write_phantom


def run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cerberus_cli.synthetic.signet import write_signet_dataset

    root = tmp_path_factory.mktemp("pre")
    table = write_signet_dataset(root / "sig", count=24, seed=5, size=32)
    code, text = run("pretrain", "-o", root / "run", "--data", f"sig={table}", "--steps", 3,
                     "--warmup", 0, "--batch-size", 4, "--patch-px", 32, "--arch", "resnet18",
                     "--val-every", 3, "--save-every", 3, "--log-every", 1, "--device", "cpu")
    assert code == 0, text
    return root / "run" / "checkpoints" / "last.pt"


def _encoder(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.encoder.state_dict()


def test_train_starts_from_the_pretrained_encoder(pretrained, tmp_path):
    phantom = write_phantom(tmp_path / "phantom", count=2, size=96, tissue_size=80)
    start = _encoder(pretrained)
    # Step 0: the network a run starts from has the pre-trained encoder, new heads.
    model, prov = build_model("light", str(pretrained), ["nuclei"], 64)
    assert [h.name for h in model.config.heads] == ["nuclei", "nuclei_type"]
    assert prov["encoder_only"] and prov["init_sha256"]
    now = model.encoder.state_dict()
    assert set(now) == set(start) and all(torch.equal(now[k], start[k]) for k in start)
    # Through the CLI: with the encoder frozen it is still the pre-trained one after training.
    out = tmp_path / "run"
    code, text = run("train", "-o", out, "--init", pretrained, "--data", f"nuclei={phantom}",
                     "--freeze-encoder", "--steps", 2, "--batch-size", 2, "--patch", 64,
                     "--workers", 0, "--val-every", 1000, "--val-fraction", 0.0, "--no-progress")
    assert code == 0, text
    after = _encoder(out / "checkpoints" / "last.pt")
    assert all(torch.equal(after[k], start[k]) for k in start)
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["init"] == str(pretrained)
    # A trained encoder moves away from it (the run really trains from those weights).
    code, text = run("train", "-o", tmp_path / "run2", "--init", pretrained, "--data", f"nuclei={phantom}",
                     "--steps", 1, "--batch-size", 2, "--patch", 64, "--workers", 0,
                     "--val-every", 1000, "--val-fraction", 0.0, "--no-progress")
    assert code == 0, text
    moved = _encoder(tmp_path / "run2" / "checkpoints" / "last.pt")["conv1.weight"]
    assert not torch.equal(moved, start["conv1.weight"])
    assert torch.allclose(moved, start["conv1.weight"], atol=2e-3)
