"""Checkpoint format, original-release import and their CLI."""

import json

import pytest
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.core.errors import CheckpointError
from cerberus_cli.model.checkpoint import load_checkpoint, save_checkpoint
from cerberus_cli.model.config import light_config, reference_config
from cerberus_cli.model.network import CerberusNet
from tests._model_fixtures import (
    OriginalCerberus,
    original_layout,
    random_original_state,
)


@pytest.fixture(scope="module")
def original_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("orig") / "cerberus_release.tar"
    torch.save({"desc": random_original_state(), "epoch": 50}, path)
    return path


def _randomise(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_round_trip_is_exact(tmp_path):
    model = _randomise(CerberusNet(light_config())).eval()
    path = save_checkpoint(model, tmp_path / "m.pt", provenance={"trained_on": "phantoms"})
    loaded = load_checkpoint(path)
    assert loaded.config == light_config()
    assert loaded.provenance == {"trained_on": "phantoms"}
    assert len(loaded.sha256) == 64
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    assert not loaded.model.training


@pytest.mark.parametrize("storage,tol", [("fp16", 1e-2), ("int8", 5e-2)])
def test_compact_storage_keeps_outputs(tmp_path, storage, tol):
    model = _randomise(CerberusNet(light_config())).eval()
    full = save_checkpoint(model, tmp_path / "full.pt")
    small = save_checkpoint(model, tmp_path / f"{storage}.pt", storage=storage)
    assert small.stat().st_size < full.stat().st_size / (1.9 if storage == "fp16" else 3.5)
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        a = model(x)["nuclei"].softmax(1)
        b = load_checkpoint(small).model(x)["nuclei"].softmax(1)
    assert (a - b).abs().max() < tol


def test_import_is_complete_and_matches_original_network(original_file):
    loaded = load_checkpoint(original_file)
    assert loaded.config == reference_config()
    assert loaded.provenance["source_format"] == "original-cerberus"
    original = OriginalCerberus()
    original.load_state_dict(torch.load(original_file, weights_only=True)["desc"])
    original.eval()
    assert len(original.state_dict()) == len(original_layout()) == 558
    x = torch.randint(0, 256, (1, 3, 144, 144)).float()
    with torch.inference_mode():
        ours = loaded.model(x)
        theirs = original(x)
    names = {"Gland": "gland", "Gland#TYPE": "gland_type", "Lumen": "lumen", "Nuclei": "nuclei",
             "Nuclei#TYPE": "nuclei_type", "Patch-Class": "tissue"}
    for orig_name, our_name in names.items():
        torch.testing.assert_close(ours[our_name], theirs[orig_name], rtol=0, atol=1e-5)


def test_import_accepts_dataparallel_prefix(tmp_path):
    path = tmp_path / "dp.tar"
    torch.save({"desc": {f"module.{k}": v for k, v in random_original_state(2).items()}}, path)
    ref = load_checkpoint(path)
    assert ref.config == reference_config()


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda s: s.pop("conv_map.weight"), "1 missing key"),
        (lambda s: s.__setitem__("decoder_head.Extra.0.weight", torch.zeros(1)), "1 unexpected key"),
        (lambda s: s.__setitem__("conv_map.weight", torch.zeros(128, 512, 1, 1)), "1 mis-shaped key"),
    ],
)
def test_import_refuses_inexact_state(tmp_path, mutate, message):
    state = random_original_state()
    mutate(state)
    path = tmp_path / "bad.tar"
    torch.save({"desc": state}, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_corrupt_truncated_and_foreign_files(tmp_path, original_file):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(original_file.read_bytes()[: original_file.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    empty = tmp_path / "empty.pt"
    empty.touch()
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path, message in [(truncated, "corrupt or truncated"), (garbage, "corrupt or truncated"),
                          (empty, "empty"), (foreign, "not a Cerberus checkpoint"),
                          (tmp_path / "missing.pt", "no such file"), (tmp_path, "directory")]:
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


def test_cli_convert_weights_and_model_info(tmp_path, original_file):
    runner = CliRunner()
    out = tmp_path / "converted.pt"
    res = runner.invoke(main, ["convert-weights", str(original_file), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists()
    converted = load_checkpoint(out)
    direct = load_checkpoint(original_file)
    for k, v in direct.model.state_dict().items():
        assert torch.equal(v, converted.model.state_dict()[k])
    assert converted.provenance["source_sha256"] == direct.sha256
    # refuses to overwrite
    res = runner.invoke(main, ["convert-weights", str(original_file), "-o", str(out)])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(main, ["model", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["parameters"] == 27_864_284
    assert [h["name"] for h in info["config"]["heads"]][-1] == "tissue"


def test_cli_clean_error_for_bad_checkpoint(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a checkpoint")
    res = CliRunner().invoke(main, ["convert-weights", str(bad), "-o", str(tmp_path / "x.pt")])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error:") and str(bad) in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


def _bad_files(tmp_path, original_file) -> dict:
    """Corrupt and foreign files a user may pass as --model, by what they are."""
    import argparse

    files = {}
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(original_file.read_bytes()[:5000])
    files["text"] = tmp_path / "notes.pt"
    files["text"].write_text("hello world\nthis is not a model\n")
    files["json"] = tmp_path / "config.json"
    files["json"].write_text(json.dumps({"encoder": "resnet34"}))
    files["foreign state dict"] = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.bias": torch.zeros(10)},
               files["foreign state dict"])
    files["foreign objects"] = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {}, "hparams": argparse.Namespace(lr=1e-3)},
               files["foreign objects"])
    files["no weights"] = tmp_path / "noweights.pt"
    torch.save({"format": "cerberus-cli/checkpoint", "format_version": 1,
                "config": light_config().to_dict()}, files["no weights"])
    files["bad config"] = tmp_path / "badconfig.pt"
    torch.save({"format": "cerberus-cli/checkpoint", "format_version": 1, "config": [1, 2],
                "state_dict": {}}, files["bad config"])
    files["bad version"] = tmp_path / "badversion.pt"
    torch.save({"format": "cerberus-cli/checkpoint", "format_version": "one"},
               files["bad version"])
    files["wrong shapes"] = tmp_path / "shapes.pt"
    model = CerberusNet(light_config())
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.fc.")}
    state["bridge.weight"] = torch.zeros(1)
    torch.save({"format": "cerberus-cli/checkpoint", "format_version": 1,
                "config": light_config().to_dict(), "state_dict": state}, files["wrong shapes"])
    return files


def test_every_bad_file_is_one_clean_line(tmp_path, original_file):
    messages = {}
    for what, path in _bad_files(tmp_path, original_file).items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        msg = str(info.value)
        messages[what] = msg
        assert msg.startswith(f"{path}: "), (what, msg)
        assert "\n" not in msg and "weights_only" not in msg and "Traceback" not in msg, msg
        assert info.value.__cause__ is None, what
    assert "corrupt or truncated" in messages["truncated"]
    assert "not a PyTorch file" in messages["text"] and "not a PyTorch file" in messages["json"]
    assert "bare state dict (2 tensors, e.g. 'conv1.weight')" in messages["foreign state dict"]
    assert "argparse.Namespace" in messages["foreign objects"]
    assert "missing entry 'state_dict'" in messages["no weights"]
    assert "invalid model config" in messages["bad config"]
    assert "malformed checkpoint" in messages["bad version"]
    assert "do not match" in messages["wrong shapes"]


def test_cli_bad_model_file_is_one_line(tmp_path, original_file):
    files = _bad_files(tmp_path, original_file)
    for what in ("text", "foreign objects", "truncated"):
        res = CliRunner().invoke(main, ["model", str(files[what])])
        assert res.exit_code == 2, (what, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "weights_only" not in lines[0]
