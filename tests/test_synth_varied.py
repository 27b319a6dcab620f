"""Varied phantoms (`synth tiles --scene varied`): real-sized textured nuclei, purple fibres."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from scipy import ndimage

from cerberus_cli.cli import main
from cerberus_cli.synthetic.params import STR, TILE_SCENE, SceneParams, varied_scene
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.stain import E_REF, H_REF
from cerberus_cli.synthetic.tiles import render_tile

SEEDS = (1, 2, 3)
#: Stroma only, one scene for every seed, so the two kinds of tile differ only by the new knobs.
STROMA = SceneParams(force_class=STR)
REAL = SceneParams(force_class=STR, nucleus_scale=1.8, vesicular=1.0, fibre_haem=1.0)


def _haematoxylin(image: np.ndarray) -> np.ndarray:
    """Haematoxylin density per pixel (colour deconvolution with the phantom's stain vectors)."""
    h, e = H_REF / np.linalg.norm(H_REF), E_REF / np.linalg.norm(E_REF)
    basis = np.stack([h, e, np.cross(h, e)])
    od = -np.log((image.astype(np.float64) + 1.0) / 256.0)
    return (od.reshape(-1, 3) @ np.linalg.inv(basis))[:, 0].reshape(image.shape[:2])


@pytest.fixture(scope="module")
def pairs():
    return [(render_tile(256, s, STROMA), render_tile(256, s, REAL)) for s in SEEDS]


def _areas(inst: np.ndarray) -> np.ndarray:
    return np.bincount(inst.ravel())[1:]


def test_nuclei_grow_by_the_scale_squared(pairs):
    colon = np.median(np.concatenate([_areas(a.nuclei) for a, _ in pairs]))
    real = np.median(np.concatenate([_areas(b.nuclei) for _, b in pairs]))
    assert 1.8 ** 2 * 0.8 < real / colon < 1.8 ** 2 * 1.2


def test_fibres_carry_haematoxylin_but_nuclei_stay_darker(pairs):
    for a, b in pairs:
        ha, hb = _haematoxylin(a.image), _haematoxylin(b.image)
        stroma_a, stroma_b = ha[(a.nuclei == 0) & (a.tissue > 0)], hb[(b.nuclei == 0) & (b.tissue > 0)]
        # Purple fibres: the stroma's haematoxylin rises clearly above the colon phantom's.
        assert np.percentile(stroma_b, 90) > np.percentile(stroma_a, 90) + 0.1
        # Each nucleus is still darker in haematoxylin than the fibres around it.
        idx = np.arange(1, int(b.nuclei.max()) + 1)
        ring = ndimage.grey_dilation(b.nuclei, size=(9, 9))
        ring[b.nuclei > 0] = 0
        inside = ndimage.mean(hb, b.nuclei, idx)
        around = ndimage.mean(hb, ring, idx)
        assert np.median(inside - around) > 0.3


def _paler_core_fraction(tile) -> float:
    """Fraction of nuclei whose core (3 px in) has less haematoxylin than their membrane."""
    h = _haematoxylin(tile.image)
    inst = tile.nuclei
    core = ndimage.binary_erosion(inst > 0, iterations=3)
    rim = (inst > 0) & ~ndimage.binary_erosion(inst > 0, iterations=1)
    idx = np.arange(1, int(inst.max()) + 1)
    has_core = np.bincount(inst[core], minlength=len(idx) + 1)[1:] > 0
    c = ndimage.mean(h, np.where(core, inst, 0), idx[has_core])
    r = ndimage.mean(h, np.where(rim, inst, 0), idx[has_core])
    return float(np.mean(c < r))


def test_vesicular_nuclei_are_paler_inside_than_at_the_membrane(pairs):
    # Blur darkens cores relative to rims, so the solid colon nuclei have none.
    colon = np.mean([_paler_core_fraction(a) for a, _ in pairs])
    real = np.mean([_paler_core_fraction(b) for _, b in pairs])
    assert colon < 0.05 and real > 0.2


def test_overlapping_windows_agree_with_large_nuclei():
    """The larger nuclei widen the placement margin; windows must still agree exactly."""
    w = PhantomWorld(5, REAL)
    a = w.labels(0, 0, 300, 300)
    b = w.labels(170, 130, 300, 300)
    x, y = a.nucleus[130:300, 170:300], b.nucleus[0:170, 0:130]
    assert np.array_equal(x > 0, y > 0)
    pairs = np.unique(np.stack([x[x > 0], y[y > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_varied_scenes_draw_within_their_ranges():
    for k in range(20):
        p = varied_scene(np.random.default_rng(k))
        assert 1.3 <= p.nucleus_scale <= 2.0 and 0.4 <= p.vesicular <= 1.0 and 0.3 <= p.fibre_haem <= 1.0
    assert (TILE_SCENE.nucleus_scale, TILE_SCENE.vesicular, TILE_SCENE.fibre_haem) == (1.0, 0.0, 0.0)


def test_cli_writes_varied_tiles_deterministically(tmp_path):
    args = ["synth", "tiles", "--tasks", "nuclei", "--count", "2", "--size", "160", "--seed", "4"]
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "v"), "--scene", "varied"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "v" / "dataset.json").read_text())
    assert meta["scene"] == "varied"
    CliRunner().invoke(main, [*args, "-o", str(tmp_path / "v2"), "--scene", "varied"])
    CliRunner().invoke(main, [*args, "-o", str(tmp_path / "c")])
    assert json.loads((tmp_path / "c" / "dataset.json").read_text())["scene"] == "colon"
    name = "nuclei/labels/phantom_00000.mat"
    assert (tmp_path / "v" / name).read_bytes() == (tmp_path / "v2" / name).read_bytes()
    varied = scipy.io.loadmat(tmp_path / "v" / name)["inst_map"]
    colon = scipy.io.loadmat(tmp_path / "c" / name)["inst_map"]
    assert np.median(_areas(varied)) > 1.3 * np.median(_areas(colon))
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x"), "--scene", "skin"])
    assert r.exit_code == 2 and "skin" in r.output and not (tmp_path / "x").exists()
