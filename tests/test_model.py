"""The Cerberus network: shapes, parameter counts, config, precision modes."""

import pytest
import torch

from cerberus_cli.core.vocabulary import INSTANCE_CLASSES, NUCLEUS_TYPES
from cerberus_cli.model.config import (
    HeadSpec,
    ModelConfig,
    cerberus_heads,
    light_config,
    reference_config,
)
from cerberus_cli.model.network import CerberusNet, count_parameters
from cerberus_cli.model.resnet import ResNetEncoder


def test_reference_parameter_counts():
    assert count_parameters(CerberusNet(reference_config())) == 27_864_284
    assert count_parameters(CerberusNet(reference_config(), with_fc=True)) == 28_377_284


@pytest.mark.parametrize("arch,blocks", [("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3])])
def test_encoder_matches_torchvision_layout(arch, blocks):
    enc = ResNetEncoder(arch, stem_stride=2, with_fc=True)
    assert [len(getattr(enc, f"layer{i}")) for i in range(1, 5)] == blocks
    names = set(enc.state_dict())
    # torchvision names, e.g. layer2.0.downsample.1.running_var and fc.weight
    assert {"conv1.weight", "bn1.running_mean", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var", "layer4.1.conv2.weight", "fc.bias"} <= names
    # torchvision resnet18 has 11,689,512 and resnet34 21,797,672 parameters
    assert count_parameters(enc) == {"resnet18": 11_689_512, "resnet34": 21_797_672}[arch]


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (144, 144)])
def test_forward_shapes_reference_stride(size):
    model = CerberusNet(ModelConfig(encoder="resnet18", stem_stride=1, heads=cerberus_heads())).eval()
    h, w = size
    with torch.inference_mode():
        out = model(torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8))
    assert set(out) == {"gland", "gland_type", "lumen", "nuclei", "nuclei_type", "tissue"}
    assert out["nuclei"].shape == (2, 3, h, w)
    assert out["nuclei_type"].shape == (2, 7, h, w)
    assert out["gland_type"].shape == (2, 3, h, w)
    assert out["tissue"].shape == (2, 9)


@pytest.mark.parametrize("size", [64, 128])
def test_forward_shapes_stride2_and_dense_tissue(size):
    model = CerberusNet(light_config()).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, size, size) * 255, tissue="dense")
    assert out["lumen"].shape == (1, 3, size, size)
    # dense tissue: one logit vector per crop-sized window of the /32 features
    side = size // 32 - min(light_config().tissue_crop, size // 32) + 1
    assert out["tissue"].shape == (1, 9, side, side)


def test_dense_tissue_matches_centre_classifier():
    model = CerberusNet(ModelConfig(encoder="resnet18", stem_stride=1, heads=cerberus_heads())).eval()
    x = torch.rand(1, 3, 144, 144) * 255
    with torch.inference_mode():
        centre = model(x, heads=[])["tissue"]
        dense = model(x, heads=[], tissue="dense")["tissue"]
    assert dense.shape == (1, 9, 1, 1)
    torch.testing.assert_close(dense[:, :, 0, 0], centre)


def test_single_head_model_is_same_code():
    cfg = ModelConfig(encoder="resnet18", heads=(HeadSpec("nuclei", "instance", INSTANCE_CLASSES),))
    model = CerberusNet(cfg).eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    assert list(out) == ["nuclei"]
    assert not any(k.startswith("tissue_head") for k in model.state_dict())


def test_heads_argument_skips_decoders():
    model = CerberusNet(light_config()).eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 64, 64), heads=["nuclei"], tissue=None)
    assert list(out) == ["nuclei"]


def test_uint8_and_float_inputs_agree():
    model = CerberusNet(light_config()).eval()
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        a = model(x)["nuclei"]
        b = model(x.float())["nuclei"]
    torch.testing.assert_close(a, b)


def test_channels_last_and_bf16_autocast_on_cpu():
    model = CerberusNet(light_config()).eval()
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        ref = model(x)["gland"]
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.contiguous(memory_format=torch.channels_last))["gland"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf = model_cl(x)["gland"]
    torch.testing.assert_close(out_cl, ref, atol=1e-4, rtol=1e-4)
    assert out_bf.dtype == torch.bfloat16
    assert (out_bf.float().argmax(1) == ref.argmax(1)).float().mean() > 0.9


def test_config_round_trip_and_validation():
    cfg = reference_config()
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.head("nuclei_type").classes == NUCLEUS_TYPES
    assert cfg.tissue_crop == 9 and light_config().tissue_crop == 4
    with pytest.raises(ValueError, match="parent"):
        ModelConfig(heads=(HeadSpec("t", "type", NUCLEUS_TYPES, parent="nuclei"),))
    with pytest.raises(ValueError, match="stem_stride"):
        ModelConfig(stem_stride=4)
    with pytest.raises(ValueError, match="unknown encoder"):
        ModelConfig(encoder="resnet101")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no segmentation heads"):
        ModelConfig(encoder="resnet50", heads=cerberus_heads())
