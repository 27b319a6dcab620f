"""Each training dataset format is read from a generated fixture in its real layout,
and malformed datasets fail with one clear line naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.datasets import (
    IGNORE,
    InstanceItem,
    TissueItem,
    open_dataset,
)
from cerberus_cli.training.formats import detect
from cerberus_cli.training.options import DataSpec
from cerberus_cli.training.splits import apply_split_file, random_split
from tests import _train_fixtures as fx


def _check_instances(item: InstanceItem, size: int | None = None) -> None:
    assert item.image.dtype == np.uint8 and item.image.ndim == 3 and item.image.shape[2] == 3
    assert item.instances.shape == item.image.shape[:2]
    assert item.instances.max() > 0
    if size is not None:
        assert item.image.shape[:2] == (size, size)


def test_lizard_release_layout(tmp_path):
    root = fx.write_lizard(tmp_path / "lizard")
    assert detect("nuclei", root) == "lizard"
    ds = open_dataset("nuclei", root)
    assert len(ds) == 3 and ds.names[0] == "consep_1"
    item = ds.load(0)
    _check_instances(item, 64)
    # Every object pixel carries its class from the .mat 'class' column.
    mat = scipy.io.loadmat(root / "lizard_labels/Lizard_Labels/Labels/consep_1.mat")
    for i, c in zip(mat["id"].ravel(), mat["class"].ravel()):
        assert set(np.unique(item.types[item.instances == i])) == {c}
    assert (item.types[item.instances == 0] == 0).all()


def test_conic_arrays(tmp_path):
    root = fx.write_conic(tmp_path / "conic")
    assert detect("nuclei", root) == "conic"
    ds = open_dataset("nuclei", root)
    assert len(ds) == 3
    assert ds.names[0] == "crag_1-0000" and ds.groups[:2] == ["crag_1", "crag_1"]
    item = ds.load(2)
    _check_instances(item, 64)
    assert set(np.unique(item.types)) <= set(range(7))


def test_pannuke_folds_resampled_to_model_resolution(tmp_path):
    root = fx.write_pannuke(tmp_path / "pannuke", size=128)
    assert detect("nuclei", root) == "pannuke"
    ds = open_dataset("nuclei", root)
    assert len(ds) == 2 and ds.groups == ["fold1", "fold1"]
    item = ds.load(0)
    _check_instances(item, 64)  # 0.25 um/px -> 0.5 um/px halves the size
    raw = np.load(root / "Fold 1/masks/fold1/masks.npy")[0]
    # Inflammatory (channel 1) nuclei keep their instance but no type; neoplastic -> epithelial.
    assert IGNORE in np.unique(item.types) or not raw[..., 1].any()
    assert 2 in np.unique(item.types) or not raw[..., 0].any()


def test_glas_with_patients(tmp_path):
    root = fx.write_glas(tmp_path / "glas", size=124)
    assert detect("gland", root) == "glas"
    ds = open_dataset("gland", root)
    assert ds.groups == ["patient-1", "patient-1", "patient-2"]
    item = ds.load(0)
    _check_instances(item, 154)  # 0.62 -> 0.5 um/px
    assert item.types is None


def test_crag_train_and_valid(tmp_path):
    root = fx.write_crag(tmp_path / "crag", size=110)
    assert detect("gland", root) == "crag"
    ds = open_dataset("gland", root)
    assert len(ds) == 4 and ds.names[0] == "train/train_1"
    _check_instances(ds.load(3), 121)  # 0.55 -> 0.5 um/px


def test_kather_folders_and_mapping_file(tmp_path):
    root = fx.write_kather(tmp_path / "kather", per_class=1, size=224)
    assert detect("tissue", root) == "class-folders"
    ds = open_dataset("tissue", root)
    assert len(ds) == 9
    item = ds.load(ds.names.index("TUM/TUM-0000"))
    assert isinstance(item, TissueItem) and item.label == 1 and item.image.shape == (224, 224, 3)
    # Other class names need a mapping file; 'ignore' drops a folder.
    other = tmp_path / "other"
    other.mkdir()
    (root / "ADI").rename(other / "fat")
    (root / "TUM").rename(other / "tumour")
    mapping = tmp_path / "map.csv"
    mapping.write_text("folder,class\nfat,adipose\ntumour,ignore\n")
    ds = open_dataset("tissue", other, "class-folders", tissue_map=mapping)
    assert [ds.load(i).label for i in range(len(ds))] == [8]


def test_generic_and_phantom_layout(tmp_path):
    root = fx.write_phantom(tmp_path / "ph", count=2, size=64)
    specs = DataSpec.parse(str(root))
    assert [s.task for s in specs] == ["gland", "lumen", "nuclei", "tissue"]
    gland = open_dataset("gland", root)
    assert gland.format == "phantom"
    item = gland.load(0)
    _check_instances(item, 64)
    assert set(np.unique(item.types[item.instances > 0])) <= {1, 2}
    generic = open_dataset("lumen", root / "lumen")
    assert generic.format == "generic" and len(generic) == 2
    (root / "gland" / "dataset.json").write_text(json.dumps({"mpp": 0.25}))
    assert open_dataset("gland", root / "gland").load(0).image.shape[:2] == (32, 32)


@pytest.mark.parametrize("breakage, message", [
    ("missing_key", "missing 'class'"),
    ("shape", "does not match image"),
    ("no_image", "no image named"),
    ("bad_class", "'class' values must be 0..6"),
])
def test_bad_lizard_fails_clearly(tmp_path, breakage, message):
    root = fx.write_lizard(tmp_path / "lizard", count=1)
    mat = root / "lizard_labels/Lizard_Labels/Labels/consep_1.mat"
    data = scipy.io.loadmat(mat)
    if breakage == "missing_key":
        scipy.io.savemat(mat, {"inst_map": data["inst_map"], "id": data["id"]})
    elif breakage == "shape":
        scipy.io.savemat(mat, {"inst_map": data["inst_map"][:10], "id": data["id"], "class": data["class"]})
    elif breakage == "bad_class":
        scipy.io.savemat(mat, {"inst_map": data["inst_map"], "id": data["id"], "class": data["class"] + 9})
    else:
        (root / "lizard_images1/Lizard_Images1/consep_1.png").unlink()
    with pytest.raises(InputError, match=message) as err:
        open_dataset("nuclei", root).load(0)
    assert "consep_1" in str(err.value) and "\n" not in str(err.value)


def test_bad_datasets_fail_clearly(tmp_path):
    conic = fx.write_conic(tmp_path / "conic")
    np.save(conic / "labels.npy", np.zeros((3, 64, 64), np.int32))
    with pytest.raises(InputError, match=r"labels\.npy: expected \(N, H, W, 2\)"):
        open_dataset("nuclei", conic)
    glas = fx.write_glas(tmp_path / "glas")
    next((glas).rglob("train_2.bmp")).unlink()
    with pytest.raises(InputError, match="train_2_anno.bmp: no image train_2.bmp"):
        open_dataset("gland", glas)
    crag = fx.write_crag(tmp_path / "crag")
    (crag / "CRAG/train/Annotation/train_1.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="train_1.png: cannot be read"):
        open_dataset("gland", crag).load(0)
    kather = fx.write_kather(tmp_path / "k", per_class=1, size=32)
    (kather / "XYZ").mkdir()
    with pytest.raises(InputError, match="XYZ: not a Kather class folder"):
        open_dataset("tissue", kather, "class-folders")
    with pytest.raises(InputError, match="not a recognised gland dataset"):
        open_dataset("gland", tmp_path / "k")
    with pytest.raises(InputError, match="no such file or directory"):
        open_dataset("nuclei", tmp_path / "missing")
    with pytest.raises(InputError, match="cannot serve task 'gland'"):
        open_dataset("gland", tmp_path / "conic", "conic")


def test_split_files_patient_and_image_level(tmp_path):
    glas = open_dataset("gland", fx.write_glas(tmp_path / "glas"))
    split = tmp_path / "split.csv"
    split.write_text("key,split\npatient-1,val\n")
    train, val = apply_split_file(glas, split)
    assert [train.name(i) for i in range(len(train))] == ["train_3"]
    assert [val.name(i) for i in range(len(val))] == ["train_1", "train_2"]
    split.write_text("train_3,test\ntrain_1,val\n")
    train, val = apply_split_file(glas, split)
    assert len(train) == 1 and len(val) == 1
    split.write_text("nobody,val\n")
    with pytest.raises(InputError, match="no key matches"):
        apply_split_file(glas, split)
    split.write_text("train_1,holdout\n")
    with pytest.raises(InputError, match="line 1: split must be one of"):
        apply_split_file(glas, split)
    tr, va = random_split(glas, 0.5, seed=0)
    assert {tr.group(i) for i in range(len(tr))}.isdisjoint({va.group(i) for i in range(len(va))})
