"""The faster post-processing gives exactly the objects of the previous algorithm.

The previous implementation (float maps, whole-array passes, one shapely
constructor per object) is kept here, verbatim in behaviour, and compared label
for label and WKB for WKB with the current one on synthetic scenes: uint8 and
float maps, partly computed chunks, thresholds that fall exactly on a uint8
step, both gland resolutions.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import shapely
from scipy import ndimage as ndi
from shapely.geometry import MultiPolygon, Polygon
from skimage.segmentation import watershed

from cerberus_cli.model.config import reference_config
from cerberus_cli.postprocess.chunks import ChunkMaps, process_chunk
from cerberus_cli.postprocess.instances import (
    _above,
    as_probability,
    fill_label_holes,
    gland_instances,
    lumen_instances,
    nuclei_instances,
    relabel_sequential,
    tie_breaker,
)
from cerberus_cli.postprocess.options import PostprocessOptions
from cerberus_cli.postprocess.polygons import _finish, label_polygons, polygonal_part
from cerberus_cli.synthetic.maps import paint_ellipses, scene

# --- the previous algorithm ----------------------------------------------------------------


def _old_relabel(labels: np.ndarray, min_size: int = 0) -> np.ndarray:
    flat = labels.ravel()
    n = int(flat.max()) if flat.size else 0
    if n == 0:
        return labels.astype(np.int32, copy=False)
    sizes = np.bincount(flat, minlength=n + 1)
    present = np.flatnonzero(sizes >= max(min_size, 1))
    present = present[present > 0]
    first = np.full(n + 1, flat.size, dtype=np.int64)
    nz = np.flatnonzero(flat)
    np.minimum.at(first, flat[nz], nz)
    order = present[np.argsort(first[present], kind="stable")]
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lut[labels]


def _old_components(mask: np.ndarray, min_size: int = 0) -> tuple[np.ndarray, int]:
    _, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    lab = _old_relabel(lab, min_size)
    return lab, int(lab.max())


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _old_nuclei(inner, boundary, options, origin=(0, 0)):
    inner = as_probability(inner)
    boundary = as_probability(boundary)
    t = options.nuclei_threshold
    mask = ((inner + boundary) > t).astype(np.uint8)
    mask = cv2.erode(mask, _ellipse(3)).astype(bool)
    markers, n = _old_components(inner > t, options.nuclei_min_marker_px)
    if n == 0:
        return np.zeros(inner.shape, np.int32)
    height = -inner.astype(np.float64)
    ys, xs = np.nonzero(mask)
    height[ys, xs] += tie_breaker(ys + origin[1], xs + origin[0]) * 1e-9
    labels = watershed(height, markers, mask=mask)
    return _old_relabel(labels.astype(np.int32, copy=False), options.nuclei_min_size_px)


def _old_fill(labels):
    out = labels.copy()
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        obj = labels[sl] == i
        holes = ndi.binary_fill_holes(obj) & (labels[sl] == 0)
        out[sl][holes] = i
    return out


def _old_grown(inner, boundary, threshold, min_size, kernel_px):
    seed = (as_probability(inner) - as_probability(boundary)) > threshold
    labels, n = _old_components(seed, min_size)
    if n == 0:
        return labels
    if kernel_px > 1:
        grown = cv2.dilate(labels.astype(np.float32), _ellipse(kernel_px))
        labels = np.where(labels > 0, labels, grown.astype(np.int32))
    return _old_fill(labels)


def _old_at_resolution(fn, inner, boundary, factor):
    if factor == 1:
        return fn(as_probability(inner), as_probability(boundary))
    h, w = inner.shape
    pad = ((0, -h % factor), (0, -w % factor))

    def block(a):
        a = np.pad(as_probability(a), pad)
        return a.reshape(a.shape[0] // factor, factor, a.shape[1] // factor, factor).mean(
            axis=(1, 3), dtype=np.float32)

    small = fn(block(inner), block(boundary))
    return np.ascontiguousarray(np.repeat(np.repeat(small, factor, 0), factor, 1)[:h, :w])


def _kernel(k, f):
    return max(1, k // f) | 1


def _old_glands(inner, boundary, o):
    f = o.gland_downsample
    return _old_at_resolution(lambda i, b: _old_grown(
        i, b, o.gland_threshold, o.gland_min_size_px // (f * f), _kernel(o.gland_kernel_px, f)),
        inner, boundary, f)


def _old_lumina(inner, boundary, gland_labels, o):
    f = o.gland_downsample
    labels = _old_at_resolution(lambda i, b: _old_grown(
        i, b, o.lumen_threshold, o.lumen_min_size_px // (f * f), _kernel(o.lumen_kernel_px, f)),
        inner, boundary, f)
    n = int(labels.max())
    if n == 0:
        return labels
    size = np.bincount(labels.ravel(), minlength=n + 1)
    inside = np.bincount(labels.ravel(), weights=(gland_labels.ravel() > 0), minlength=n + 1)
    keep = inside >= o.lumen_in_gland_share * np.maximum(size, 1)
    keep[0] = False
    return _old_relabel(np.where(keep[labels], labels, 0))


def _old_trace(mask):
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None

    def ring(c):
        return (c[:, 0, :].astype(np.float64) + 0.5) / 2.0

    links = hierarchy[0]
    polys = []
    for i, (_, _, child, parent) in enumerate(links):
        if parent >= 0:
            continue
        holes = []
        while child >= 0:
            holes.append(ring(contours[child]))
            child = links[child][0]
        polys.append(Polygon(ring(contours[i]), holes))
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _old_polygons(labels, ids, offset, scale, simplify):
    slices = ndi.find_objects(labels)
    traced, where, origins = [], [], []
    for k, i in enumerate(ids):
        sl = slices[i - 1] if 0 < i <= len(slices) else None
        geom = None if sl is None else _old_trace(labels[sl] == i)
        if geom is not None:
            traced.append(geom)
            where.append(k)
            origins.append((sl[1].start + offset[0], sl[0].start + offset[1]))
    geoms = [None] * len(ids)
    if not traced:
        return geoms
    arr = np.empty(len(traced), dtype=object)
    arr[:] = traced
    arr = _finish(arr, simplify)
    shift = np.repeat(np.asarray(origins, np.float64), shapely.get_num_coordinates(arr), axis=0)
    arr = shapely.transform(arr, lambda xy: (xy + shift) * scale)
    for k, g in zip(where, arr):
        geoms[k] = polygonal_part(g)
    return geoms


# --- comparisons ---------------------------------------------------------------------------

def _maps(seed: int, quantise: bool, holes: bool):
    """Dense scene maps (uint8 or float), optionally with never-computed blocks."""
    sc = scene((300, 340), seed=seed, nuclei=400, glands=6)
    prob = {k: (np.round(v * 255).astype(np.uint8) if quantise else v.astype(np.float32))
            for k, v in sc.prob.items()}
    if holes:  # whole tiles never computed, as a chunk window next to background has
        valid = np.ones((300, 340), bool)
        valid[:100, 200:] = False
        valid[220:, :90] = False
        prob = {k: v * valid for k, v in prob.items()}
    return sc, prob


OPTIONS = [
    PostprocessOptions(max_gland_px=100, max_lumen_px=80),
    PostprocessOptions(max_gland_px=100, max_lumen_px=80, gland_downsample=2),
    # 0.6 * 255 = 153 exactly: the integer rule must reproduce float32 rounding there.
    PostprocessOptions(max_gland_px=100, max_lumen_px=80, nuclei_threshold=0.6,
                       gland_threshold=0.6, lumen_threshold=0.4),
]


@pytest.mark.parametrize("quantise", [True, False])
@pytest.mark.parametrize("opt", OPTIONS)
def test_label_maps_equal_the_previous_algorithm(quantise, opt):
    for seed, holes in ((0, False), (1, True)):
        _, p = _maps(seed, quantise, holes)
        origin = (37, 11)
        new_n = nuclei_instances(p["nuclei"][0], p["nuclei"][1], opt, origin)
        old_n = _old_nuclei(p["nuclei"][0], p["nuclei"][1], opt, origin)
        assert new_n.dtype == old_n.dtype == np.int32
        assert np.array_equal(new_n, old_n) and new_n.max() > 100
        new_g = gland_instances(p["gland"][0], p["gland"][1], opt)
        assert np.array_equal(new_g, _old_glands(p["gland"][0], p["gland"][1], opt))
        new_l = lumen_instances(p["lumen"][0], p["lumen"][1], new_g, opt)
        assert np.array_equal(new_l, _old_lumina(p["lumen"][0], p["lumen"][1], new_g, opt))
        assert new_g.max() > 0 and new_l.max() > 0


def test_hole_filling_equals_binary_fill_holes():
    """The flood fill finds the holes scipy's binary_fill_holes finds, object by object."""
    rng = np.random.default_rng(4)
    nested = np.zeros((60, 70), np.int32)  # rings in rings: each encloses the next
    for i, (a, b) in enumerate(((3, 57), (8, 52), (13, 47), (18, 42)), start=1):
        nested[a:b, a:b + 10] = i
        nested[a + 2:b - 2, a + 2:b + 8] = 0
    nested[30, 25] = 0
    maps = [nested, np.where(nested == 2, 0, nested)]
    for _ in range(6):
        blobs = cv2.medianBlur((rng.random((120, 140)) > rng.uniform(0.3, 0.6))
                               .astype(np.uint8) * 255, 3) > 0
        lab = ndi.label(blobs, np.ones((3, 3)))[0].astype(np.int32)
        maps += [lab, np.where(rng.random(lab.shape) < 0.05, 0, lab)]  # pepper holes
    filled = 0
    for lab in maps:
        new = fill_label_holes(lab)
        assert np.array_equal(new, _old_fill(lab))
        filled += int((new != lab).sum())
    assert filled > 100


def test_integer_thresholds_match_float_arithmetic_for_every_value():
    a = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(256, 256)
    b = np.ascontiguousarray(a.T)
    steps = [k / 255 for k in range(0, 256, 17)] + [0.5, 0.55, 0.6, 0.4, 0.3, 0.05, 0.999]
    for t in steps:
        pa, pb = as_probability(a), as_probability(b)
        assert np.array_equal(_above(a, t), pa > t), t
        assert np.array_equal(_above(a, t, b, "+"), (pa + pb) > t), t
        assert np.array_equal(_above(a, t, b, "-"), (pa - pb) > t), t


def test_relabel_equals_the_previous_algorithm():
    rng = np.random.default_rng(4)
    lab = rng.integers(0, 50, (120, 90)).astype(np.int32)
    lab[rng.random(lab.shape) < 0.6] = 0
    for min_size in (0, 1, 5, 40):
        assert np.array_equal(relabel_sequential(lab, min_size), _old_relabel(lab, min_size))
    assert np.array_equal(relabel_sequential(np.zeros((5, 5), np.int32)), np.zeros((5, 5)))


def test_polygons_equal_the_previous_algorithm():
    rng = np.random.default_rng(5)
    ragged = (rng.random((160, 170)) > 0.55) * rng.integers(1, 30, (160, 170))  # many parts, holes
    ellipses = paint_ellipses((200, 220), 60, (3.0, 12.0), rng, gap=0)
    for lab in (ragged.astype(np.int32), ellipses):
        ids = list(range(0, int(lab.max()) + 3))  # 0 and missing ids give None
        new = label_polygons(lab, ids, (3.0, 5.0), 2.0, 0.5)
        old = _old_polygons(lab, ids, (3.0, 5.0), 2.0, 0.5)
        assert [None if g is None else shapely.to_wkb(g) for g in new] == \
            [None if g is None else shapely.to_wkb(g) for g in old]
    assert any(isinstance(g, MultiPolygon) for g in new if g is not None) or \
        any(isinstance(g, MultiPolygon) for g in label_polygons(ragged.astype(np.int32)))


def test_whole_chunk_records_unchanged_by_foreground_only_work():
    """Records of a chunk are the same when the maps carry a (full) valid mask."""
    sc, p = _maps(2, True, False)
    cfg = reference_config()
    opt = OPTIONS[0]
    base = ChunkMaps(origin=(0, 0), core=(0, 0, 340, 300), prob=p, types=sc.types)
    a = process_chunk(base, cfg, opt, 2.0, 0.25, key="s")
    b = process_chunk(dataclasses.replace(base, valid=np.ones((300, 340), bool)), cfg, opt,
                      2.0, 0.25, key="s")
    assert [(r.uuid, r.geometry.wkb, r.class_id, r.probability, r.parent_uuid) for r in a] == \
        [(r.uuid, r.geometry.wkb, r.class_id, r.probability, r.parent_uuid) for r in b]
    assert len(a) > 300


def test_masked_watershed_equals_the_public_watershed():
    """Heights given only on the mask, markers partly outside it, equal heights in plateaus."""
    from cerberus_cli.postprocess.instances import masked_watershed

    rng = np.random.default_rng(5)
    for _ in range(3):
        image = np.round(rng.random((90, 120)) * 8) / 8  # many ties
        mask = cv2.dilate((rng.random((90, 120)) > 0.7).astype(np.uint8), _ellipse(3)) > 0
        markers = np.zeros((90, 120), np.int32)
        pts = rng.integers(0, [90, 120], (40, 2))
        markers[pts[:, 0], pts[:, 1]] = np.arange(1, 41)
        ys, xs = np.nonzero(mask)
        got = masked_watershed(image[ys, xs], ys, xs, markers, mask)
        want = watershed(image, markers, mask=mask)
        assert got.dtype == np.int32 and (got == want).all() and got.max() > 0
