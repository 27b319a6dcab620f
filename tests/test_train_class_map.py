"""Training from real layouts: datasets with their own (coarser) classes through a class
map, a loss that learns from coarse labels without inventing fine ones, weighted sources,
and the CLI's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import NUCLEUS_TYPES
from cerberus_cli.training.class_map import load_class_map
from cerberus_cli.training.datasets import open_dataset
from cerberus_cli.training.losses import set_nll, type_loss
from cerberus_cli.training.task_sampler import SamplerConfig, TaskSampler, source_item_probs
from cerberus_cli.training.type_codes import IGNORE, SET_FLAG, set_code, set_members
from tests._train_fixtures import nuclei_tile, write_phantom

NAMES = [c.name for c in NUCLEUS_TYPES]
INFLAMMATORY = {NAMES.index(n) for n in ("neutrophil", "lymphocyte", "plasma", "eosinophil")}


def write_consep_like(root: Path, count: int = 3, size: int = 128, seed: int = 7) -> Path:
    """The generic layout with CoNSeP's own 4 classes, classes.json and 0.25 um/px."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "instances", "classes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img, inst, classes = nuclei_tile(size, rng)
        lut = np.zeros(inst.max() + 1, np.uint8)
        for k in classes:
            lut[k] = 1 + (k % 4)  # CoNSeP ids 1..4
        name = f"img_{i}"
        assert cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        assert cv2.imwrite(str(root / "instances" / f"{name}.png"), inst.astype(np.uint16))
        assert cv2.imwrite(str(root / "classes" / f"{name}.png"), lut[inst])
    (root / "classes.json").write_text(json.dumps(
        {"0": "background", "1": "other", "2": "inflammatory", "3": "epithelial", "4": "spindle-shaped"}))
    (root / "dataset.json").write_text(json.dumps({"mpp": 0.25}))
    return root


@pytest.fixture(scope="module")
def consep(tmp_path_factory) -> Path:
    return write_consep_like(tmp_path_factory.mktemp("consep"))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("phantom"), count=3, size=96, tissue_size=64)


def test_set_codes_round_trip():
    assert set_code([2]) == 2
    code = set_code(sorted(INFLAMMATORY))
    assert SET_FLAG <= code < IGNORE and set(set_members(code)) == INFLAMMATORY
    with pytest.raises(ValueError):
        set_code([0, 1])


def test_consep_preset_maps_coarse_classes_to_sets(consep):
    ds = open_dataset("nuclei", consep, class_map="consep")
    item = ds.load(0)
    assert item.types is not None and item.image.shape[0] == 64  # 0.25 -> 0.5 um/px
    values = {int(v) for v in np.unique(item.types[item.instances > 0])}
    members = {v: set(set_members(v)) for v in values}
    assert INFLAMMATORY in members.values()                      # inflammatory: any white cell
    assert {NAMES.index("epithelial")} in members.values()        # epithelial: itself
    assert {NAMES.index("connective")} in members.values()        # spindle-shaped: connective
    assert set(range(1, 7)) in members.values()                   # other: a nucleus, type unknown
    assert (item.types[item.instances == 0] == 0).all()
    assert ds.problem(0) is None
    assert "inflammatory" not in ds.describe() and "neutrophil|lymphocyte" in ds.describe()


def test_foreign_classes_without_a_map_are_refused(consep):
    with pytest.raises(InputError, match=r"its classes \(1 other, 2 inflammatory.*--class-map"):
        open_dataset("nuclei", consep)


def test_json_class_map_and_its_errors(consep, tmp_path):
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"1": None, "2": ["lymphocyte", "plasma"], "3": "epithelial", "4": "connective"}))
    ds = open_dataset("nuclei", consep, class_map=str(good))
    item = ds.load(1)
    assert item.types is not None
    assert IGNORE in item.types[item.instances > 0]             # "other": type unknown, no loss
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"2": "lymphocyte"}))
    problem = open_dataset("nuclei", consep, class_map=str(partial)).problem(0)
    assert problem is not None and "are not in the class map" in problem and "img_0.png" in problem
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"2": "macrophage"}))
    with pytest.raises(InputError, match="unknown nuclei class"):
        load_class_map(str(bad), "nuclei")
    with pytest.raises(InputError, match="neither a preset"):
        load_class_map("nope", "nuclei")
    with pytest.raises(InputError, match="not one for gland"):
        load_class_map("consep", "gland")


def test_set_loss_is_cross_entropy_for_one_class_and_blind_within_a_set():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 5, 5)
    fine = torch.randint(0, 7, (2, 5, 5))
    assert torch.allclose(set_nll(logits, fine), F.cross_entropy(logits, fine), atol=1e-6)
    code = set_code(sorted(INFLAMMATORY))
    target = torch.full((1, 1, 1), code)
    members = sorted(INFLAMMATORY)
    a = torch.full((1, 7, 1, 1), -2.0)
    a[0, members[0]] = 3.0
    b = torch.full((1, 7, 1, 1), -2.0)
    b[0, members[-1]] = 3.0                                       # the same mass on another member
    assert torch.allclose(set_nll(a, target), set_nll(b, target))
    c = torch.full((1, 7, 1, 1), -2.0)
    c[0, NAMES.index("epithelial")] = 3.0                         # the mass outside the set
    assert set_nll(c, target) > set_nll(a, target) + 1.0
    # Coarse-only pixels: the loss is the set term alone, with a gradient.
    logits.requires_grad_(True)
    loss = type_loss(logits[:1, :, :1, :1], target)
    assert loss is not None and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_weighted_sources_set_each_source_share():
    probs = source_item_probs([2, 4], [1.0, 0.5])
    assert probs is not None and np.allclose(probs, [1 / 3, 1 / 3] + [1 / 12] * 4)
    assert source_item_probs([2, 4], [None, None]) is None
    assert np.allclose(source_item_probs([3, 1], [None, 3.0]), [1 / 12] * 3 + [3 / 4])
    sampler = TaskSampler(SamplerConfig(sizes={"nuclei": 6}, batch_size=8, seed=1,
                                        item_probs={"nuclei": probs}))
    drawn = [s.index for step in range(200) for s in sampler.plan(step).samples]
    share = np.mean(np.array(drawn) < 2)
    assert 0.6 < share < 0.73, share  # weights 1 : 0.5, whatever the item counts


def test_cli_trains_on_a_mapped_weighted_mix(consep, phantom, tmp_path):
    out = tmp_path / "run"
    args = ["train", "-o", str(out), "--init", "random", "--arch", "light", "--tasks", "nuclei",
            "--data", f"nuclei@2={consep}", "--class-map", f"{consep}=consep",
            "--data", f"nuclei@0.5={phantom}/nuclei", "--steps", "4", "--batch-size", "2",
            "--patch", "64", "--workers", "0", "--val-every", "4", "--val-limit", "2",
            "--scale-augment", "0.25", "--no-progress", "--seed", "2"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["class_maps"] == {str(consep): "consep"}
    assert [d["weight"] for d in config["options"]["data"]] == [2.0, 0.5]
    assert config["options"]["scale_augment"] == 0.25
    assert "classes consep (1->neutrophil|epithelial" in config["data"]["nuclei"]
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "val" and "nuclei_type_acc" in r for r in val)


@pytest.mark.parametrize("args, message", [
    (["--data", "nuclei@0={c}"], "the weight after '@' must be a positive number"),
    (["--data", "nuclei@x={c}"], "the weight after '@' must be a positive number"),
    (["--data", "nuclei={c}"], "are not the nuclei classes of cerberus"),
    (["--data", "nuclei={c}", "--class-map", "/elsewhere=consep"], "not the path of a --data"),
    (["--data", "nuclei={c}", "--class-map", "consep"], "expected DATA_PATH=FILE|PRESET"),
    (["--data", "nuclei={c}", "--class-map", "{c}=nope"], "neither a preset"),
    (["--data", "nuclei={c}", "--scale-augment", "1.5"], "--scale-augment must be in [0, 1)"),
])
def test_cli_class_map_refusals_are_one_line(consep, tmp_path, args, message):
    args = [a.replace("{c}", str(consep)) for a in args]
    res = CliRunner().invoke(main, ["train", "-o", str(tmp_path / "r"), "--steps", "1", "--arch", "light",
                                    "--workers", "0", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
