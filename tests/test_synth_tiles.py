"""Phantom tiles: labels agree with the image, ids are clean, output is deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from scipy import ndimage

from cerberus_cli.cli import main
from cerberus_cli.core.vocabulary import KATHER_TO_TISSUE
from cerberus_cli.synthetic.params import EPITHELIAL, GLAND, KIND_SURFACE, SURFACE
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.tiles import render_tile

SEEDS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def tiles():
    return [render_tile(256, s) for s in SEEDS]


def _contiguous(inst: np.ndarray) -> bool:
    ids = np.unique(inst)
    return np.array_equal(ids, np.arange(ids.max() + 1)) or np.array_equal(ids, [0])


def test_instance_ids_are_contiguous(tiles):
    for t in tiles:
        assert t.image.shape == (256, 256, 3) and t.image.dtype == np.uint8
        for inst in (t.nuclei, t.glands, t.lumina):
            assert _contiguous(inst)


def test_every_nucleus_is_one_dark_haematoxylin_object(tiles):
    for t in tiles:
        img = t.image.astype(np.float64)
        od = -np.log((img + 1) / 256)
        grey = img.mean(axis=2)
        tissue_bg = (t.nuclei == 0) & (t.tissue > 0)
        ref_grey = np.median(grey[tissue_bg])
        # Haematoxylin absorbs red most: OD_red / OD_green higher than eosin's.
        ratio = od[..., 0] / (od[..., 1] + 1e-6)
        n = int(t.nuclei.max())
        idx = np.arange(1, n + 1)
        mean_grey = ndimage.mean(grey, t.nuclei, idx)
        mean_ratio = ndimage.mean(ratio, t.nuclei, idx)
        # Each nucleus is clearly darker than the 3 px around it ...
        ring = ndimage.grey_dilation(t.nuclei, size=(7, 7))
        ring[t.nuclei > 0] = 0
        ring_grey = ndimage.mean(grey, ring, idx)
        assert np.all(ring_grey - mean_grey > 25)
        assert np.all(mean_grey < 140) and np.median(mean_grey) < ref_grey - 30
        # ... and haematoxylin-coloured (blue-purple, not eosin pink).
        assert np.all(mean_ratio > np.median(ratio[tissue_bg]))
        # One connected object per id (lobes touch) and one class per object.
        for i, sl in enumerate(ndimage.find_objects(t.nuclei), start=1):
            m = t.nuclei[sl] == i
            assert ndimage.label(m, structure=np.ones((3, 3)))[1] == 1
            assert len(np.unique(t.nucleus_class[sl][m])) == 1
        assert np.all((t.nuclei > 0) == (t.nucleus_class > 0))


def test_all_nucleus_types_present(tiles):
    seen = set()
    for t in tiles:
        seen |= set(np.unique(t.nucleus_class).tolist())
    assert seen == set(range(7))


def test_lumina_lie_inside_exactly_one_gland(tiles):
    lumen_count = 0
    for t in tiles:
        assert np.all(t.glands[t.lumina > 0] > 0)
        assert np.all(t.gland_class[t.lumina > 0] == GLAND)
        for i, sl in enumerate(ndimage.find_objects(t.lumina), start=1):
            under = np.unique(t.glands[sl][t.lumina[sl] == i])
            assert list(under) == [t.lumen_parent[i - 1]]
            lumen_count += 1
        # Every gland that lies wholly inside the tile has exactly one lumen.
        for g, sl in enumerate(ndimage.find_objects(t.glands), start=1):
            if sl is None or t.gland_class[sl][t.glands[sl] == g][0] != GLAND:
                continue
            ys, xs = sl
            if ys.start == 0 or xs.start == 0 or ys.stop == 256 or xs.stop == 256:
                continue
            assert np.sum(t.lumen_parent == g) == 1
    assert lumen_count > 5


def test_surface_epithelium_borders_glass():
    found = 0
    for seed in range(1, 40):
        lab = PhantomWorld(seed).labels(-40, -40, 272, 272)
        inner = (slice(40, 232), slice(40, 232))
        surf = lab.gland_kind[inner] == KIND_SURFACE
        if not surf.any():
            continue
        found += 1
        near_glass = (ndimage.distance_transform_edt(lab.tissue > 0) < 38)[inner]
        assert np.all(near_glass[surf])
        # A band, not a ring: no lumen, and its nuclei are epithelial.
        assert not np.any(lab.lumen[inner][surf])
        assert set(np.unique(lab.nucleus_class[inner][surf & (lab.nucleus[inner] > 0)])) == {EPITHELIAL}
        t = render_tile(192, seed, jpeg=False)
        assert np.array_equal(t.gland_class == SURFACE, lab.gland_kind[inner] == KIND_SURFACE)
        if found >= 2:
            break
    assert found >= 2


def test_tissue_patches_are_dominated_by_their_class():
    for name, cls in KATHER_TO_TISSUE.items():
        t = render_tile(224, 100 + cls, tissue_class=cls)
        assert np.mean(t.tissue == cls) > 0.9, name


def test_same_seed_same_tile_different_seed_different_tile():
    a, b, c = render_tile(160, 7), render_tile(160, 7), render_tile(160, 8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.nuclei, b.nuclei)
    assert not np.array_equal(a.image, c.image)


def test_overlapping_windows_agree():
    """The basis of block-wise slides: objects are the same from either window."""
    w = PhantomWorld(11)
    a = w.labels(0, 0, 400, 400)
    b = w.labels(250, 170, 400, 400)
    sa = (slice(170, 400), slice(250, 400))
    sb = (slice(0, 230), slice(0, 150))
    for name in ("tissue", "nucleus_class", "gland_kind"):
        assert np.array_equal(getattr(a, name)[sa], getattr(b, name)[sb]), name
    for name in ("nucleus", "gland", "lumen"):
        x, y = getattr(a, name)[sa], getattr(b, name)[sb]
        assert np.array_equal(x > 0, y > 0), name
        pairs = np.unique(np.stack([x[x > 0], y[y > 0]]), axis=1)
        # A one-to-one map between the two windows' ids.
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1], name


def test_cli_writes_the_dataset_layout(tmp_path):
    out = tmp_path / "ds"
    r = CliRunner().invoke(main, ["synth", "tiles", "-o", str(out), "--count", "2", "--size", "128",
                                  "--seed", "3"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["mpp"] == 0.5 and meta["count"] == 2 and meta["seed"] == 3
    for name in ("phantom_00000", "phantom_00001"):
        assert (out / "nuclei" / "images" / f"{name}.png").is_file()
        mat = scipy.io.loadmat(out / "nuclei" / "labels" / f"{name}.mat")
        inst = mat["inst_map"]
        assert inst.shape == (128, 128)
        assert mat["id"].shape == mat["class"].shape == (inst.max(), 1)
        assert set(mat["class"].ravel()) <= set(range(1, 7))
        for sub in ("gland/instances", "gland/classes", "lumen/instances", "gland/images", "lumen/images"):
            assert (out / sub / f"{name}.png").is_file()
    patches = sorted(p.parent.name for p in (out / "tissue").glob("*/*.png"))
    assert len(patches) == 2 and set(patches) <= set(KATHER_TO_TISSUE)

    # Same seed: byte-identical files.
    out2 = tmp_path / "ds2"
    CliRunner().invoke(main, ["synth", "tiles", "-o", str(out2), "--count", "2", "--size", "128",
                              "--seed", "3"])
    for f in out.rglob("*"):
        if f.is_file():
            assert f.read_bytes() == (out2 / f.relative_to(out)).read_bytes(), f


def test_parallel_workers_write_the_same_files(tmp_path):
    from cerberus_cli.synthetic.dataset import write_tile_dataset
    write_tile_dataset(tmp_path / "a", count=3, size=96, seed=9, tasks=("gland", "tissue"))
    write_tile_dataset(tmp_path / "b", count=3, size=96, seed=9, tasks=("gland", "tissue"), workers=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 1 + 3 * 3 + 3
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_cli_refuses_existing_output_and_bad_tasks(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    r = CliRunner().invoke(main, ["synth", "tiles", "-o", str(out), "--count", "1", "--size", "96"])
    assert r.exit_code == 2 and "error:" in r.output and "exists" in r.output
    r = CliRunner().invoke(main, ["synth", "tiles", "-o", str(tmp_path / "x"), "--tasks", "cells"])
    assert r.exit_code == 2 and "unknown task" in r.output
    assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(main, ["synth", "tiles", "-o", str(out), "--count", "1", "--size", "96",
                                  "--tasks", "gland", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (out / "gland" / "instances" / "phantom_00000.png").is_file()
    assert not (out / "nuclei").exists()


def test_touching_glands_stay_separate_with_their_own_lumen():
    from dataclasses import replace

    from cerberus_cli.synthetic.params import NORM, TILE_SCENE

    lab = PhantomWorld(2, replace(TILE_SCENE, force_class=NORM)).labels(0, 0, 768, 768)
    g = lab.gland
    a, b = g[:, 1:], g[:, :-1]
    touching = (a > 0) & (b > 0) & (a != b)
    pairs = set(zip(a[touching].tolist(), b[touching].tolist()))
    assert len(pairs) >= 2
    for i, j in pairs:
        for k in (i, j):
            # Each gland of a touching pair keeps exactly its own lumen inside it.
            assert np.all(g[lab.lumen == k] == k)
            assert np.any(lab.lumen == k) or not np.any(g == k)


def test_cli_slide_scene_tiles_are_drawn_from_the_slide_scene(tmp_path):
    """`--scene slide`: tiles of the phantom-slide scene, to score a model on tiles and slides alike."""
    import cv2

    from cerberus_cli.synthetic.dataset import tile_seed
    from cerberus_cli.synthetic.params import SLIDE_SCENE

    args = ["synth", "tiles", "--tasks", "gland", "--count", "1", "--size", "96", "--seed", "2"]
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "s"), "--scene", "slide"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s" / "dataset.json").read_text())["scene"] == "slide"
    image = cv2.imread(str(tmp_path / "s" / "gland" / "images" / "phantom_00000.png"))[..., ::-1]
    world = tile_seed(2, "seg", 0)
    assert np.array_equal(image, render_tile(96, world, SLIDE_SCENE).image)
    assert not np.array_equal(image, render_tile(96, world).image)
