"""Fixtures for model tests: original-release state dicts and a reference network.

``OriginalCerberus`` re-implements the original release's module layout (names
``backbone``, ``conv_map``, ``decoder_head``, ``output_head``) independently of
cerberus_cli, so tests can compare an imported model with the network the weights
were made for.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

KEYS_FILE = Path(__file__).parent / "data" / "original_cerberus_checkpoint_keys.json"


def original_layout() -> dict[str, list[int]]:
    return json.loads(KEYS_FILE.read_text())


def random_original_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the exact names and shapes of the original release."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in original_layout().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith("bn.weight") or ".bn" in key and key.endswith("weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1)
            state[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return state


class _CBR(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _Block(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class _Conv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.conv(x)


class _Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + idt)


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 1, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cfg = [(64, 64, 3, 1), (64, 128, 4, 2), (128, 256, 6, 2), (256, 512, 3, 2)]
        for i, (cin, cout, n, s) in enumerate(cfg, 1):
            blocks = [_Basic(cin, cout, s)] + [_Basic(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        d0 = F.relu(self.bn1(self.conv1(x)))
        d1 = self.layer1(F.max_pool2d(d0, 3, 2, 1))
        d2 = self.layer2(d1)
        d3 = self.layer3(d2)
        return [d0, d1, d2, d3, self.layer4(d3)]


class _PatchClass(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(512)
        self.conv1 = nn.Conv2d(512, 256, 1)
        self.bn2 = nn.BatchNorm2d(256)
        self.conv2 = nn.Conv2d(256, 9, 1)

    def forward(self, d4):
        h, w = d4.shape[-2:]
        y0, x0 = (h - min(9, h)) // 2, (w - min(9, w)) // 2
        x = d4[..., y0:y0 + min(9, h), x0:x0 + min(9, w)].mean((2, 3), keepdim=True)
        x = F.relu(self.bn1(x))
        return self.conv2(F.relu(self.bn2(self.conv1(x)))).flatten(1)


class OriginalCerberus(nn.Module):
    """The original release's six-head network, module names as in its checkpoints."""

    HEADS = {"Gland": 3, "Gland#TYPE": 3, "Lumen": 3, "Nuclei": 3, "Nuclei#TYPE": 7}

    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.conv_map = nn.Conv2d(512, 256, 1, bias=False)
        levels = [(256, 256, 128), (128, 128, 64), (64, 64, 64), (64, 64, 64)]
        self.decoder_head = nn.ModuleDict()
        self.output_head = nn.ModuleDict()
        for name, ch in self.HEADS.items():
            self.decoder_head[name] = nn.ModuleList(
                _Block(_CBR(a, b, 3), _CBR(b, c, 3)) for a, b, c in levels
            )
            kind = "TYPE" if "#" in name else "INST"
            self.output_head[name] = nn.ModuleDict(
                {kind: nn.ModuleDict({"x": nn.Sequential(_Block(_CBR(64, 96, 1)), _Conv(96, ch))})}
            )
        self.decoder_head["Patch-Class"] = _PatchClass()

    def forward(self, imgs):
        feats = self.backbone(imgs / 255.0)
        out = {"Patch-Class": self.decoder_head["Patch-Class"](feats[-1])}
        for name in self.HEADS:
            x = self.conv_map(feats[-1])
            for level, skip in zip(self.decoder_head[name], feats[3::-1]):
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                x = level(x + skip)
            kind = "TYPE" if "#" in name else "INST"
            out[name] = self.output_head[name][kind]["x"](x)
        return out
