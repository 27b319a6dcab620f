"""ResNet50 encoders: torchvision key layout, multitask-dipath release checkpoints, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.model.resnet import ResNetEncoder
from cerberus_cli.transfer.loaded_encoder import load_encoder


def run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def torchvision_resnet50_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under ``torchvision.models.resnet50().state_dict()``'s names and
    shapes (v1.5 layout, fc included), written out here from torchvision's definition."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, out: int, inp: int, k: int) -> None:
        sd[f"{name}.weight"] = torch.randn(out, inp, k, k, generator=gen) * (2.0 / (inp * k * k)) ** 0.5

    def bn(name: str, c: int) -> None:
        sd[f"{name}.weight"] = torch.rand(c, generator=gen) * 0.5 + 0.5
        sd[f"{name}.bias"] = torch.randn(c, generator=gen) * 0.1
        sd[f"{name}.running_mean"] = torch.randn(c, generator=gen) * 0.1
        sd[f"{name}.running_var"] = torch.rand(c, generator=gen) + 0.5
        sd[f"{name}.num_batches_tracked"] = torch.tensor(7)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for li, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            p = f"layer{li}.{b}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    sd["fc.weight"] = torch.randn(1000, 2048, generator=gen) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


@pytest.fixture(scope="module")
def r50(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = torchvision_resnet50_state()
    path = tmp_path_factory.mktemp("r50") / "resnet50.pth"
    torch.save(sd, path)
    return path, sd


def _same_trunk(trunk: ResNetEncoder, sd: dict[str, torch.Tensor]) -> None:
    ours = trunk.state_dict()
    assert set(ours) == {k for k in sd if not k.startswith("fc.")}
    for k, v in ours.items():
        assert torch.equal(v, sd[k]), k


def test_torchvision_resnet50_state_dict_loads_exactly(r50):
    path, sd = r50
    # torchvision resnet50: 25,557,032 parameters (BN running statistics are buffers).
    assert sum(v.numel() for k, v in sd.items() if "running_" not in k and "num_batches" not in k) == 25_557_032
    strict = ResNetEncoder("resnet50", 2, with_fc=True)
    strict.load_state_dict(sd, strict=True)  # every key and shape of torchvision's layout
    enc = load_encoder(str(path))
    assert enc.arch == "resnet50" and enc.normalisation == "imagenet" and enc.stem_stride == 2
    _same_trunk(enc.trunk, sd)
    assert enc.level_channels()["layer4"] == 2048


def test_export_encoder_round_trip_gives_identical_features(r50, tmp_path):
    path, sd = r50
    out = tmp_path / "exported.pt"
    code, text = run("export-encoder", path, "-o", out)
    assert code == 0, text
    back = load_encoder(str(out))
    assert (back.arch, back.normalisation, back.stem_stride, back.mpp) == ("resnet50", "imagenet", 2, 0.5)
    _same_trunk(back.trunk, sd)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    layers = ("layer2", "layer4")
    first = load_encoder(str(path)).maps(images, layers)
    second = back.maps(images, layers)
    for name in layers:
        assert torch.equal(first[name], second[name])
    assert second["layer4"].shape[1] == 2048


def _mtdp_file(path: Path, trunk: dict[str, torch.Tensor]) -> Path:
    """A multitask-dipath release checkpoint: ``features.*`` trunk and ``heads.*`` task heads."""
    state = {f"features.{k}": v for k, v in trunk.items() if not k.startswith("fc.")}
    gen = torch.Generator().manual_seed(1)
    for task, classes in (("patterns", 4), ("cells", 2)):
        state[f"heads.{task}.linear.weight"] = torch.randn(classes, 2048, generator=gen)
        state[f"heads.{task}.linear.bias"] = torch.zeros(classes)
    torch.save(state, path)
    return path


def test_mtdp_release_checkpoint_loads_as_encoder(r50, tmp_path):
    _, sd = r50
    path = _mtdp_file(tmp_path / "resnet50-mh-best.pth", sd)
    enc = load_encoder(str(path))
    assert enc.arch == "resnet50" and enc.extra["provenance_of_model"].startswith("multitask-dipath")
    _same_trunk(enc.trunk, sd)
    # --model accepts it: the encoder exports under plain torchvision names.
    code, text = run("export-encoder", path, "-o", tmp_path / "e.pt")
    assert code == 0, text
    assert set(torch.load(tmp_path / "e.pt", weights_only=True)) == {k for k in sd if not k.startswith("fc.")}


@pytest.mark.parametrize("case", ["densenet", "shape", "blocks"])
def test_encoder_file_of_a_wrong_layout_is_one_line_naming_it(r50, tmp_path, case):
    _, sd = r50
    if case == "densenet":
        state = {"features.conv0.weight": torch.zeros(64, 3, 7, 7),
                 "features.denseblock1.denselayer1.conv1.weight": torch.zeros(128, 64, 1, 1),
                 "heads.t.linear.weight": torch.zeros(2, 1024)}
    elif case == "shape":
        state = {f"features.{k}": v for k, v in sd.items()}
        state["features.layer2.0.conv2.weight"] = torch.zeros(128, 128, 5, 5)
    else:
        state = {k: v for k, v in sd.items() if not k.startswith("layer3.5.")}
    path = tmp_path / f"{case}.pth"
    torch.save(state, path)
    out = tmp_path / "out.pt"
    code, text = run("export-encoder", path, "-o", out)
    assert code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0], text
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_resnet50_pretrains_and_finetunes(r50, tmp_path):
    from cerberus_cli.synthetic.signet import write_signet_dataset

    path, _ = r50
    table = write_signet_dataset(tmp_path / "sig", count=40, seed=3, size=32)
    code, text = run("pretrain", "-o", tmp_path / "pre", "--data", f"signet={table}", "--init", path,
                     "--steps", 2, "--warmup", 1, "--batch-size", 4, "--patch-px", 32,
                     "--val-every", 2, "--log-every", 1, "--save-every", 2, "--device", "cpu")
    assert code == 0, text
    code, text = run("finetune", table, "-o", tmp_path / "ft", "--model", tmp_path / "pre/checkpoints/last.pt",
                     "--epochs", 1, "--lr-grid", "0.01", "--batch-size", 4, "--patch-px", 32,
                     "--bootstrap", 0, "--device", "cpu")
    assert code == 0, text
    head = torch.load(tmp_path / "ft/model.pt", weights_only=True)["classifier"]["state_dict"]
    assert head["1.weight"].shape == (2, 2048)


def test_features_of_a_resnet50_file_are_its_pooled_levels(r50, tmp_path):
    import cv2
    import numpy as np

    from cerberus_cli.synthetic.signet import write_signet_dataset
    from cerberus_cli.transfer.featurefile import read_features

    path, _ = r50
    table = write_signet_dataset(tmp_path / "sig", count=4, seed=2, size=32)
    out = tmp_path / "f.parquet"
    code, text = run("features", table, "--model", path, "-o", out, "--patch-px", 32, "--workers", 0,
                     "--layers", "layer3,layer4")
    assert code == 0, text
    cols, X, meta = read_features(out)
    assert X.shape == (4, 1024 + 2048)
    assert meta["level_dims"] == {"layer3": 1024, "layer4": 2048}
    img = cv2.imread(str(table.parent / cols["path"][0]))[:, :, ::-1].copy()
    maps = load_encoder(str(path)).maps(torch.from_numpy(img).permute(2, 0, 1)[None], ("layer3", "layer4"))
    want = torch.cat([maps["layer3"].mean((2, 3)), maps["layer4"].mean((2, 3))], 1)[0].numpy()
    assert np.allclose(X[0], want, atol=1e-4)
