"""Maps as OME-Zarr 0.5 on Zarr v3: read back by ome-zarr-py (no warnings) and
validated by ome-zarr-models."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import zarr

from cerberus_cli.core.vocabulary import GLAND_TYPES, NUCLEUS_TYPES, TISSUE_TYPES
from cerberus_cli.inference.mapstore import MapStore
from cerberus_cli.inference.multiscale import write_multiscale
from cerberus_cli.model.config import light_config
from cerberus_cli.outputs.tissue_map import read_tissue_map, write_tissue_map


def _read_ome(path, caplog) -> list:
    """All nodes ome-zarr-py finds under ``path``; any warning or logged warning fails."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    caplog.clear()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        nodes = list(Reader(parse_url(str(path)))())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    return nodes


def _validate_models(path) -> None:
    """ome-zarr-models: the image and each label image are valid NGFF 0.5."""
    from ome_zarr_models.v05 import Image, ImageLabel

    group = zarr.open_group(str(path), mode="r")
    Image.from_zarr(group)
    for name in group["labels"].attrs["ome"]["labels"]:
        ImageLabel.from_zarr(group["labels"][name])


def test_tissue_map_is_ome_zarr_with_named_coloured_labels(tmp_path, caplog):
    classes = np.zeros((50, 60), np.uint8)
    classes[5:30, 5:40] = 5
    classes[40:48, 45:58] = 8
    zp, _ = write_tissue_map(tmp_path / "s.tissue.zarr", tmp_path / "s.tissue.png", classes, 8.0)
    meta = json.loads((zp / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["attributes"]["ome"]["version"] == "0.5"
    ms = meta["attributes"]["ome"]["multiscales"][0]
    assert [a.get("unit") for a in ms["axes"]] == ["micrometer", "micrometer"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [8.0, 8.0]
    assert meta["attributes"]["cerberus"]["valid_extent"]["um"]["x"] == [0.0, 480.0]
    nodes = _read_ome(zp, caplog)
    image, label = nodes[0], next(n for n in nodes if "properties" in n.metadata)
    assert (np.asarray(image.data[0]) == classes).all()
    assert label.metadata["name"] == "tissue"
    assert {k: v["class"] for k, v in label.metadata["properties"].items()} == {
        i: s.name for i, s in enumerate(TISSUE_TYPES)}
    assert label.metadata["color"][5][:3] == pytest.approx([c / 255 for c in TISSUE_TYPES[5].color])
    assert (np.asarray(label.data[0]) == classes).all()
    _validate_models(zp)
    ids, attrs = read_tissue_map(zp)
    assert (ids == classes).all() and attrs["mpp"] == 8.0
    assert attrs["classes"][5] == {"id": 5, "name": "stroma", "color": [255, 170, 200]}


def test_read_tissue_map_accepts_the_earlier_plain_array(tmp_path):
    arr = zarr.create_array(store=str(tmp_path / "old.zarr"), shape=(4, 5), dtype="uint8")
    arr[...] = 3
    arr.attrs.update({"mpp": 16.0})
    ids, attrs = read_tissue_map(tmp_path / "old.zarr")
    assert (ids == 3).all() and attrs["mpp"] == 16.0


def test_saved_maps_are_one_ome_zarr_image_with_type_labels(tmp_path, caplog):
    cfg = light_config()
    store = MapStore.create(tmp_path / "work.zarr", cfg, width=1000, height=700, tile=256)
    assert (store.width, store.height) == (1024, 768)  # padded to whole tiles
    rng = np.random.default_rng(0)
    for head in store.instance_heads:
        store.group[f"prob/{head}"][...] = rng.integers(0, 256, (2, 768, 1024), dtype=np.uint8)
    for head in store.type_heads:
        store.group[f"type/{head}"][...] = rng.integers(0, 3, (768, 1024), dtype=np.uint8)
    out = write_multiscale(store, tmp_path / "S.maps.zarr", min_side=300, valid_size=(1000, 700))
    nodes = _read_ome(out, caplog)
    image = nodes[0]
    assert [a.shape for a in image.data] == [(6, 768, 1024), (6, 384, 512), (6, 192, 256)]
    assert image.metadata["channel_names"] == [
        f"{h} {c}" for h in ("gland", "lumen", "nuclei") for c in ("inner", "boundary")]
    scales = [t[0]["scale"] for t in image.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [1.0, 2.0, 2.0]]
    level0 = np.asarray(image.data[0])
    for i, head in enumerate(("gland", "lumen", "nuclei")):  # copied unchanged
        assert (level0[2 * i:2 * i + 2] == store.group[f"prob/{head}"][...]).all()
    src = np.asarray(store.group["prob/lumen"][:, :4, :4]).astype(float)
    level1 = np.asarray(image.data[1][2:4, :2, :2])
    expect = src.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4))
    assert np.abs(level1 - expect).max() <= 0.5  # 2x2 mean, rounded
    labels = {n.metadata["name"]: n for n in nodes if "properties" in n.metadata}
    assert set(labels) == {"nuclei_type", "gland_type"}
    names = {k: v["class"] for k, v in labels["nuclei_type"].metadata["properties"].items()}
    assert names == {i: s.name for i, s in enumerate(NUCLEUS_TYPES)}
    assert labels["gland_type"].metadata["properties"][2]["class"] == GLAND_TYPES[2].name
    assert labels["nuclei_type"].metadata["color"][0][3] == 0  # no-label is transparent
    for head in ("nuclei_type", "gland_type"):
        assert (np.asarray(labels[head].data[0]) == store.group[f"type/{head}"][...]).all()
    attrs = zarr.open_group(str(out), mode="r").attrs["cerberus"]
    assert attrs["valid_extent"]["x"] == [0, 1000] and attrs["valid_extent"]["y"] == [0, 700]
    assert attrs["valid_extent"]["um"]["x"] == [0.0, 500.0]
    assert attrs["type_maps"]["gland_type"][1]["name"] == "gland"
    _validate_models(out)
