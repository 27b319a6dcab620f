"""Instance post-processing, type vote, polygons and chunk ownership."""

from __future__ import annotations

import dataclasses
import uuid

import cv2
import numpy as np
import pytest
import shapely

from cerberus_cli.core.vocabulary import GLAND_TYPES, NUCLEUS_TYPES
from cerberus_cli.model.config import reference_config
from cerberus_cli.postprocess.chunks import ChunkMaps, process_chunk, required_margin
from cerberus_cli.postprocess.instances import (
    gland_instances,
    lumen_instances,
    nuclei_instances,
    relabel_sequential,
)
from cerberus_cli.postprocess.options import PostprocessOptions
from cerberus_cli.postprocess.polygons import label_polygons, mask_polygon
from cerberus_cli.postprocess.types import vote_types
from cerberus_cli.synthetic.maps import (
    SynthScene,
    chunks_of,
    instance_maps,
    paint_ellipses,
    scene,
    whole,
)

OPT = PostprocessOptions(max_gland_px=100, max_lumen_px=80)
CFG = reference_config()


def _best_iou(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """For each ground-truth object, the best IoU with a predicted object."""
    n, m = int(gt.max()), int(pred.max())
    inter = np.bincount(gt.ravel() * (m + 1) + pred.ravel(),
                        minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
    a, b = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(a[:, None] + b[None, :] - inter, 1)
    return iou[1:, 1:].max(axis=1)


# --- instances -----------------------------------------------------------------------------

def test_nuclei_instances_recover_ground_truth():
    rng = np.random.default_rng(1)
    gt = paint_ellipses((200, 200), 60, (3.0, 7.0), rng, gap=1)
    maps = instance_maps(gt, 3)
    labels = nuclei_instances(maps[0], maps[1], OPT)
    assert labels.dtype == np.int32 and labels.max() == gt.max()
    assert _best_iou(gt, labels).min() > 0.75
    quantised = nuclei_instances(np.round(maps[0] * 255).astype(np.uint8),
                                 np.round(maps[1] * 255).astype(np.uint8), OPT)
    assert quantised.max() == gt.max()
    assert _best_iou(labels, quantised).min() > 0.9


def test_watershed_splits_touching_nuclei():
    gt = np.zeros((40, 60), np.int32)
    yy, xx = np.mgrid[:40, :60]
    gt[(yy - 20) ** 2 + (xx - 22) ** 2 < 64] = 1
    gt[((yy - 20) ** 2 + (xx - 36) ** 2 < 64) & (gt == 0)] = 2  # touching disc
    maps = instance_maps(gt, 3)
    assert (maps[0] + maps[1] > 0.5)[20, 20:40].all()  # one connected foreground blob
    labels = nuclei_instances(maps[0], maps[1], OPT)
    assert labels.max() == 2 and _best_iou(gt, labels).min() > 0.8


def test_gland_instances_grow_back_and_fill_holes():
    rng = np.random.default_rng(2)
    gt = paint_ellipses((300, 300), 5, (20, 45), rng, gap=14)
    maps = instance_maps(gt, 11)
    maps[:, gt == 0] = 0
    ring = maps.copy()
    centre = np.argwhere(gt == 1).mean(0).astype(int)
    ring[:, centre[0] - 3:centre[0] + 4, centre[1] - 3:centre[1] + 4] = 0  # a hole
    labels = gland_instances(ring[0], ring[1], OPT)
    assert labels.max() == gt.max()
    assert _best_iou(gt, labels).min() > 0.85
    assert labels[centre[0], centre[1]] > 0  # hole filled
    coarse = gland_instances(maps[0], maps[1],
                             dataclasses.replace(OPT, gland_downsample=2))
    assert coarse.max() == gt.max() and _best_iou(gt, coarse).min() > 0.8


def test_gland_small_objects_removed():
    gt = np.zeros((100, 100), np.int32)
    gt[10:20, 10:20] = 1   # 100 px: below the 400 px minimum
    gt[40:90, 40:90] = 2
    maps = instance_maps(gt, 11)
    labels = gland_instances(maps[0], maps[1], OPT)
    assert labels.max() == 1 and labels[65, 65] == 1 and labels[15, 15] == 0


def test_lumen_kept_only_inside_glands():
    glands = np.zeros((120, 200), np.int32)
    glands[10:110, 10:110] = 1
    lum = np.zeros_like(glands)
    lum[40:80, 40:80] = 1      # inside the gland
    lum[40:80, 140:180] = 2    # in stroma
    maps = instance_maps(lum, 3)
    labels = lumen_instances(maps[0], maps[1], glands, OPT)
    assert labels.max() == 1 and labels[60, 60] == 1 and labels[60, 160] == 0


def test_relabel_sequential_orders_by_first_pixel_and_drops_small():
    lab = np.array([[0, 7, 7, 0], [3, 3, 0, 9], [3, 0, 0, 0]], np.int32)
    out = relabel_sequential(lab, min_size=2)
    assert out.tolist() == [[0, 1, 1, 0], [2, 2, 0, 0], [2, 0, 0, 0]]


def test_options_are_validated():
    with pytest.raises(ValueError, match="gland-downsample"):
        PostprocessOptions(gland_downsample=3)
    with pytest.raises(ValueError, match="nuclei-threshold"):
        PostprocessOptions(nuclei_threshold=1.5)


# --- type vote ------------------------------------------------------------------------------

def test_vote_types_majority_ignores_no_label():
    labels = np.array([[1, 1, 1, 1, 2, 2, 3, 3, 4]], np.int32)
    types = np.array([[0, 0, 0, 2, 0, 0, 1, 2, 9]], np.uint8)
    cls, share = vote_types(labels, types, 3)
    assert cls.tolist() == [2, 0, 1, 0]     # tie 1 vs 2 -> lower id; 9 is out of range
    assert share.tolist() == pytest.approx([1.0, 1.0, 0.5, 1.0])
    assert cls.dtype == np.int16 and share.dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        vote_types(labels, types[:, :3], 3)


# --- polygons -------------------------------------------------------------------------------

def test_mask_polygon_follows_pixel_edges_and_keeps_holes():
    m = np.zeros((12, 12), bool)
    m[1:11, 1:11] = True
    m[3:9, 3:9] = False
    m[5:7, 5:7] = True     # island inside the hole
    g = mask_polygon(m)
    assert g.is_valid and g.geom_type == "MultiPolygon"
    # Exact pixel count but for the small chamfers at the hole's corners.
    assert abs(g.area - m.sum()) <= 4 * 0.0625 + 1e-9
    assert g.bounds == (1.0, 1.0, 11.0, 11.0)
    assert not g.contains(shapely.Point(4, 4)) and g.contains(shapely.Point(6, 6))
    assert mask_polygon(np.zeros((3, 3), bool)) is None
    single = np.zeros((3, 3), bool)
    single[1, 1] = True
    assert mask_polygon(single).equals(shapely.box(1, 1, 2, 2))
    pinch = np.eye(4, dtype=bool)  # diagonal-only contact: one valid polygon
    g = mask_polygon(pinch)
    assert g.is_valid and g.geom_type == "Polygon" and abs(g.area - 4) < 0.5


def test_label_polygons_translation_invariant_and_scaled():
    rng = np.random.default_rng(3)
    lab = paint_ellipses((80, 80), 12, (3, 9), rng)
    shifted = np.zeros((97, 91), np.int32)
    shifted[17:, 11:] = lab
    a = label_polygons(lab, offset=(100, 50), scale=2.0, simplify=0.5)
    b = label_polygons(shifted, offset=(89, 33), scale=2.0, simplify=0.5)
    assert len(a) == int(lab.max())
    for ga, gb, i in zip(a, b, range(1, len(a) + 1)):
        assert ga.is_valid and ga.equals_exact(gb, 0)
        ys, xs = np.nonzero(lab == i)
        c = ga.centroid
        assert c.x == pytest.approx((xs.mean() + 0.5 + 100) * 2, abs=0.6)
        assert c.y == pytest.approx((ys.mean() + 0.5 + 50) * 2, abs=0.6)
    assert label_polygons(lab, ids=[999]) == [None]


def test_simplified_outlines_keep_the_pixel_area_of_small_objects():
    """Douglas-Peucker alone grew 3-5 px-radius nuclei by 4-5 % (their outer corners stay)."""
    for r in (3, 4, 5, 8, 20):
        m = np.zeros((64, 64), np.int32)
        cv2.circle(m, (32, 32), r, 1, -1)
        simple = label_polygons(m, simplify=0.5)[0]
        exact = label_polygons(m, simplify=0.0)[0]
        assert simple.is_valid and len(simple.exterior.coords) <= len(exact.exterior.coords)
        assert abs(simple.area / m.sum() - 1) < 0.02, r
        assert abs(simple.area - exact.area) < 0.01 * m.sum(), r
    rng = np.random.default_rng(5)
    lab = paint_ellipses((120, 120), 30, (3, 9), rng)
    areas = np.array([g.area for g in label_polygons(lab, simplify=0.5)])
    assert abs(np.median(areas / np.bincount(lab.ravel())[1:]) - 1) < 0.015


# --- chunks ---------------------------------------------------------------------------------

def _key(records):
    return {r.uuid: r for r in records}


def _same(a, b):
    assert a.keys() == b.keys()
    for u in a:
        ra, rb = a[u], b[u]
        assert ra.geometry.equals_exact(rb.geometry, 0)
        assert (ra.task, ra.class_id, ra.class_name, ra.parent_uuid) == (
            rb.task, rb.class_id, rb.class_name, rb.parent_uuid)
        assert ra.probability == rb.probability


@pytest.mark.parametrize("core,quantise,downsample", [
    (64, False, 1), (150, False, 1), (97, True, 1), (75, False, 2),
])
def test_chunked_equals_whole_image(core, quantise, downsample):
    sc = scene(seed=4)
    if quantise:
        sc.prob = {k: np.round(v * 255).astype(np.uint8) for k, v in sc.prob.items()}
    opt = dataclasses.replace(OPT, gland_downsample=downsample)
    one = process_chunk(whole(sc), CFG, opt, scale=2.0, mpp=0.25, key="slide")
    parts = [r for ch in chunks_of(sc, core, required_margin(opt))
             for r in process_chunk(ch, CFG, opt, scale=2.0, mpp=0.25, key="slide")]
    assert len(parts) == len(_key(parts))  # no duplicates
    _same(_key(one), _key(parts))
    counts = {t: sum(r.task == t for r in one) for t in ("nuclei", "gland", "lumen")}
    assert counts == {t: int(sc.labels[t].max()) for t in counts}


def test_chunked_equals_whole_image_with_touching_glands():
    import cv2

    gt = np.zeros((260, 300), np.int32)
    k = 0
    for cy in (60, 125, 190):          # a packed grid: neighbours share borders
        for cx in (50, 112, 174, 236):
            k += 1
            cv2.ellipse(gt, (cx + (cy // 5) % 7, cy), (33, 34), 0, 0, 360, k, -1)
    sc = SynthScene(labels={"gland": gt}, prob={"gland": instance_maps(gt, 11)},
                    types={"gland_type": np.ones(gt.shape, np.uint8)}, classes={})
    grown = gland_instances(sc.prob["gland"][0], sc.prob["gland"][1], OPT)
    assert grown.max() == k
    meet = (grown[:, 1:] > 0) & (grown[:, :-1] > 0) & (grown[:, 1:] != grown[:, :-1])
    assert meet.any()  # grown glands collide: the tie rule matters
    cfg = CFG.with_heads(["gland", "gland_type"])
    one = process_chunk(whole(sc), cfg, OPT, scale=1.0, mpp=0.5)
    assert len(one) == k
    for core in (50, 70, 111):
        parts = [r for ch in chunks_of(sc, core, required_margin(OPT))
                 for r in process_chunk(ch, cfg, OPT, scale=1.0, mpp=0.5)]
        _same(_key(one), _key(parts))


def test_label_components_number_in_raster_order():
    from skimage.measure import label

    from cerberus_cli.postprocess.instances import label_components

    m = np.random.default_rng(0).random((120, 130)) < 0.45
    lab, n = label_components(m, 3)
    ref = label(m, connectivity=2)
    ref[np.bincount(ref.ravel())[ref] < 3] = 0
    assert n == lab.max() and (relabel_sequential(ref) == lab).all()


def test_records_match_ground_truth_classes_links_and_geometry():
    sc = scene(seed=5)
    recs = process_chunk(whole(sc), CFG, OPT, scale=2.0, mpp=0.25, key="s")
    glands = {r.uuid: r for r in recs if r.task == "gland"}
    for r in recs:
        uuid.UUID(r.uuid)
        cx, cy = int(r.centroid_x / 2), int(r.centroid_y / 2)  # back to the grid
        gt = sc.labels[r.task][cy, cx]
        assert gt > 0
        if r.task == "nuclei":
            assert r.class_id == sc.classes["nuclei"][gt]
            assert r.class_name == NUCLEUS_TYPES[r.class_id].name
            assert 0.5 < r.probability <= 1.0
            assert r.area_um2 == pytest.approx((sc.labels["nuclei"] == gt).sum() * 0.25,
                                               rel=0.35)
        elif r.task == "gland":
            assert r.class_name == GLAND_TYPES[r.class_id].name
            assert r.class_id == sc.classes["gland"][gt]
        else:
            assert (r.class_id, r.class_name) == (1, "lumen")
            parent = glands[r.parent_uuid]
            assert parent.geometry.contains(r.geometry.centroid)
    # Deterministic: a rerun gives identical ids.
    again = process_chunk(whole(sc), CFG, OPT, scale=2.0, mpp=0.25, key="s")
    assert [r.uuid for r in again] == [r.uuid for r in recs]
    other = process_chunk(whole(sc), CFG, OPT, scale=2.0, mpp=0.25, key="t")
    assert not {r.uuid for r in other} & {r.uuid for r in recs}


def test_objects_at_the_grid_edge_are_kept_once():
    gt = np.zeros((100, 130), np.int32)
    yy, xx = np.mgrid[:100, :130]
    gt[(yy - 50) ** 2 + xx ** 2 < 36] = 1               # cut by the left grid edge
    gt[(yy - 99) ** 2 + (xx - 70) ** 2 < 30] = 2        # cut by the bottom edge
    gt[(yy - 50) ** 2 + (xx - 64) ** 2 < 30] = 3        # on the chunk seam
    prob = {"nuclei": instance_maps(gt, 3)}
    cfg = CFG.with_heads(["nuclei"])
    m = required_margin(OPT, ("nuclei",))
    recs = []
    for x0 in (0, 64):
        ax0, ax1 = max(0, x0 - m), min(130, x0 + 64 + m)
        ch = ChunkMaps(origin=(ax0, 0), core=(x0, 0, min(x0 + 64, 130), 100),
                       prob={"nuclei": prob["nuclei"][:, :, ax0:ax1]})
        recs += process_chunk(ch, cfg, OPT, scale=1.0, mpp=0.5)
    assert len(recs) == 3 == len({r.uuid for r in recs})
    assert sorted(round(r.geometry.bounds[0]) for r in recs) == [0, 59, 65]


def test_small_margin_drops_cut_objects_instead_of_writing_halves():
    sc = scene(seed=6, nuclei=0, glands=4, gland_radii=(35, 45))
    cfg = CFG.with_heads(["gland", "gland_type"])
    recs = [r for ch in chunks_of(sc, 64, 16) for r in process_chunk(ch, cfg, OPT, 1.0, 0.5)]
    whole_recs = _key(process_chunk(whole(sc), cfg, OPT, 1.0, 0.5))
    for r in recs:  # whatever survives is a whole object, never a piece
        assert r.uuid in whole_recs
        assert r.geometry.equals_exact(whole_recs[r.uuid].geometry, 0)


def test_invalid_pixels_produce_no_objects():
    sc = scene(seed=7)
    ch = whole(sc)
    ch.valid = np.zeros(sc.labels["nuclei"].shape, bool)
    ch.valid[:, :200] = True
    recs = process_chunk(ch, CFG, OPT, 1.0, 0.5)
    assert recs and all(r.geometry.bounds[2] <= 200 for r in recs if r.task == "nuclei")


def test_chunk_input_errors():
    sc = scene(seed=8, nuclei=5, glands=1)
    ch = whole(sc)
    ch.types = {"nuclei_type": sc.types["nuclei_type"]}
    with pytest.raises(ValueError, match="gland_type"):
        process_chunk(ch, CFG, OPT, 1.0, 0.5)
    ch = whole(sc)
    del ch.prob["lumen"]
    with pytest.raises(ValueError, match="lumen"):
        process_chunk(ch, CFG, OPT, 1.0, 0.5)
    ch = whole(sc)
    ch.core = (0, 0, 10_000, 10)
    with pytest.raises(ValueError, match="core"):
        process_chunk(ch, CFG, OPT, 1.0, 0.5)
    ch = whole(sc)
    ch.types["gland_type"] = ch.types["gland_type"][:10]
    with pytest.raises(ValueError, match="gland_type"):
        process_chunk(ch, CFG, OPT, 1.0, 0.5)


def test_required_margin_covers_the_largest_objects():
    assert required_margin(PostprocessOptions(), ("nuclei",)) > 64
    full = required_margin(PostprocessOptions())
    assert full > 512 and full % 2 == 0
    assert required_margin(PostprocessOptions(max_gland_px=200)) < full


def test_lumina_without_glands():
    sc = scene(seed=10, nuclei=0, glands=3)
    lumen_only = CFG.with_heads(["lumen"])
    ch = whole(sc)
    ch.prob = {"lumen": sc.prob["lumen"]}
    recs = process_chunk(ch, lumen_only, OPT, 1.0, 0.5)
    assert len(recs) == 3 and all(r.parent_uuid is None and r.task == "lumen" for r in recs)
    ch = whole(sc)
    ch.prob["gland"] = np.zeros_like(sc.prob["gland"])  # a model that sees no gland
    anywhere = dataclasses.replace(OPT, lumen_in_gland_share=0.0)
    recs = process_chunk(ch, CFG.with_heads(["gland", "gland_type", "lumen"]), anywhere, 1.0, 0.5)
    assert [r.task for r in recs] == ["lumen"] * 3 and all(r.parent_uuid is None for r in recs)
    assert not process_chunk(ch, CFG.with_heads(["gland", "gland_type", "lumen"]), OPT, 1.0, 0.5)


def test_objects_stay_inside_the_extent():
    """Maps past the slide are ignored and every polygon is clipped to it."""
    sc = scene((300, 340), seed=3, nuclei=300, glands=6)
    maps = whole(sc)
    scale = 2.0
    extent = (0.0, 0.0, 251.0 * scale - 0.5, 200.0 * scale)  # last column half inside
    free = process_chunk(maps, CFG, OPT, scale, 0.25, key="s")
    kept = process_chunk(dataclasses.replace(maps, extent=extent), CFG, OPT, scale, 0.25, key="s")
    x0, y0, x1, y1 = extent
    bounds = shapely.bounds(np.array([r.geometry for r in kept]))
    assert (bounds[:, 0] >= x0).all() and (bounds[:, 1] >= y0).all()
    assert (bounds[:, 2] <= x1).all() and (bounds[:, 3] <= y1).all()
    outside = shapely.bounds(np.array([r.geometry for r in free]))
    assert ((outside[:, 2] > x1) | (outside[:, 3] > y1)).any()  # the extent did cut something
    assert all(r.geometry.is_valid and not r.geometry.is_empty for r in kept)
    assert any(b[2] > x1 - scale for b in bounds)  # objects reach the edge, clipped there
    # Objects far from the edge are untouched.
    far = {r.uuid: r.geometry.wkb for r in free if r.geometry.bounds[2] < x1 - 40
           and r.geometry.bounds[3] < y1 - 40}
    got = {r.uuid: r.geometry.wkb for r in kept}
    assert far and all(got.get(u) == w for u, w in far.items())
    # Clipped records measure their clipped geometry.
    r = max(kept, key=lambda r: r.geometry.bounds[2])
    assert r.area_um2 == pytest.approx(r.geometry.area * 0.25 ** 2)


def test_object_uuids_are_uuid5_of_the_moments():
    """The direct computation gives the strings of ``uuid.uuid5`` over the same name."""
    from cerberus_cli.core.records import OBJECT_NAMESPACE
    from cerberus_cli.postprocess.chunks import object_uuid_from_moments

    for key, task, n, sx, sy in (("", "nuclei", 1, 0, 0), ("slide 7", "gland", 812, -3, 10 ** 12),
                                 ("lame\u0301", "lumen", 5, 123456789, 987654321)):
        want = str(uuid.uuid5(OBJECT_NAMESPACE, f"{key}|{task}|{n}|{sx}|{sy}"))
        assert object_uuid_from_moments(key, task, n, sx, sy) == want
