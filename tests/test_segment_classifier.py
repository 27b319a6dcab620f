"""``cerberus segment`` applies the classification head of a ``cerberus finetune`` model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.model.classifier import attach_classifier
from cerberus_cli.model.registry import load_model
from cerberus_cli.outputs.tissue_map import read_tissue_map
from cerberus_cli.transfer.finetune_heads import FinetuneNet

FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2"]


def run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def signet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cerberus_cli.synthetic.signet import write_signet_dataset

    return write_signet_dataset(tmp_path_factory.mktemp("seg") / "signet", count=32, seed=4, size=32)


def _finetuned(signet: Path, out: Path, tiny_model: Path, head: str) -> Path:
    code, text = run("finetune", signet, "-o", out, "--model", tiny_model, "--head", head, "--epochs", 1,
                     "--lr-grid", "0.01", "--patch-px", 32, "--bootstrap", 0, "--device", "cpu")
    assert code == 0, text
    return out / "model.pt"


@pytest.mark.parametrize("head", ["linear", "cerberus"])
def test_dense_classifier_matches_the_finetuned_network(signet, tmp_path, tiny_model, head):
    path = _finetuned(signet, tmp_path / head, tiny_model, head)
    loaded = attach_classifier(load_model(str(path)))
    net = loaded.model.eval()
    entry = torch.load(path, weights_only=True)["classifier"]
    ref = FinetuneNet(net.encoder, head, 2, "rgb/255").eval()
    ref.head.load_state_dict(entry["state_dict"])
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = ref(images)
        dense = net(images, tissue="dense")["signet"]  # one 32 px window per image
        centre = net(images)["signet"]
    assert dense.shape == (3, 2, 1, 1)
    assert torch.allclose(dense[:, :, 0, 0], want, atol=1e-5)
    assert torch.allclose(centre, want, atol=1e-5)
    # A larger input: one cell per 32 px window, one layer4 cell apart.
    big = torch.randint(0, 256, (2, 3, 128, 96), dtype=torch.uint8)
    with torch.no_grad():
        maps = net(big, tissue="dense")["signet"]
    stride = loaded.config.total_stride
    assert maps.shape == (2, 2, 128 // stride - 32 // stride + 1, 96 // stride - 32 // stride + 1)
    assert loaded.config.tissue_patch_px == 32 and loaded.config.head("signet").class_names() == ["other", "signet"]


def test_segment_writes_the_class_map_of_a_finetuned_model(signet, tmp_path, tiny_model, phantom_slide):
    model = _finetuned(signet, tmp_path / "ft", tiny_model, "linear")
    out = tmp_path / "out"
    code, text = run("-q", "segment", phantom_slide, "-o", out, "--model", model, *FAST)
    assert code == 0, text
    stem = phantom_slide.stem
    classes, attrs = read_tissue_map(out / f"{stem}.tissue.zarr")
    assert [c["name"] for c in attrs["classes"]] == ["other", "signet"]
    assert classes.size > 0 and set(classes.ravel().tolist()) <= {0, 1}
    assert (out / f"{stem}.tissue.png").is_file()
