"""Replay of segment's CPU side from saved maps: same objects whatever the workers."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import shapely
import zarr

from cerberus_cli.inference.mapstore import MapStore
from cerberus_cli.inference.multiscale import write_multiscale
from cerberus_cli.inference.replay import STAGES, replay_slide, start_pool
from cerberus_cli.inference.tile_plan import Tile
from cerberus_cli.model.config import reference_config
from cerberus_cli.synthetic.maps import instance_maps, paint_ellipses, type_map
from cerberus_cli.synthetic.slide import write_phantom_slide

TILE, MARGIN, CHUNK = 144, 152, 288


def _saved_maps(path, cfg, width: int, height: int) -> None:
    """What ``--save-maps`` writes (OME-Zarr), with nuclei and glands over the whole grid."""
    rng = np.random.default_rng(0)
    h, w = -(-height // TILE) * TILE, -(-width // TILE) * TILE
    nu = paint_ellipses((h, w), 400, (3.0, 7.0), rng, gap=1)
    gl = paint_ellipses((h, w), 8, (18, 40), rng, gap=14)
    prob = {name: np.round(instance_maps(lab, k) * 255).astype(np.uint8)
            for name, lab, k in (("nuclei", nu, 3), ("gland", gl, 11), ("lumen", gl * 0, 3))}
    types = {"nuclei_type": type_map(nu, 7, rng)[0].astype(np.uint8),
             "gland_type": type_map(gl, 3, rng)[0].astype(np.uint8)}
    store = MapStore.create(path.with_suffix(".store.zarr"), cfg, width, height, TILE)
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            store.write(Tile(x, y, TILE, MARGIN),
                        {n: a[:, y:y + TILE, x:x + TILE] for n, a in prob.items()},
                        {n: a[y:y + TILE, x:x + TILE] for n, a in types.items()})
    write_multiscale(store, path, valid_size=(width, height))


def test_replay_writes_the_same_objects_with_and_without_workers(tmp_path):
    slide = tmp_path / "s.svs"
    write_phantom_slide(slide, (600, 500), seed=1, truth=False)
    cfg = reference_config().with_heads(["nuclei", "nuclei_type", "gland", "gland_type",
                                         "lumen"])
    _saved_maps(tmp_path / "s.maps.zarr", cfg, 600, 500)
    kw = dict(tile=TILE, margin=MARGIN, chunk=CHUNK, overlay=False)
    inline = replay_slide(slide, tmp_path / "s.maps.zarr", tmp_path / "a.parquet", cfg, None,
                          keep_records=True, **kw)
    pool = start_pool(2)
    try:
        replay_slide(slide, tmp_path / "s.maps.zarr", tmp_path / "b.parquet", cfg,
                     pool, **kw)
    finally:
        pool.shutdown()
    assert inline.tiles > 0 and inline.chunks > 1 and inline.counts["nuclei"] > 50
    assert set(inline.cpu_s) == set(STAGES) and inline.total_cpu_s > 0
    assert inline.mpx_per_cpu_s() > 0 and inline.mpx_per_wall_s > 0
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    cols = [c for c in a.column_names if c != "slide"]  # "slide" names the output file
    assert a.select(cols).equals(b.select(cols)) and a.num_rows == len(inline.records)
    # Every object inside the 600 x 500 slide, though the maps reach 720 x 576.
    bounds = shapely.bounds(shapely.from_wkb(a["geometry"].to_numpy(zero_copy_only=False)))
    assert bounds[:, :2].min() >= 0 and bounds[:, 2].max() <= 600 and bounds[:, 3].max() <= 500


def test_map_store_chunk_files_read_and_write_as_zarr(tmp_path):
    """Tiles written as chunk files read back through zarr, and windows read as zarr's."""
    from cerberus_cli.inference.mapstore import Box, MapStore
    from cerberus_cli.inference.tile_plan import Tile

    cfg = reference_config().with_heads(["nuclei", "nuclei_type"])
    store = MapStore.create(tmp_path / "m.zarr", cfg, 200, 150, tile=64)
    assert all(f is not None for f in store._files.values())
    rng = np.random.default_rng(2)
    full = {"prob/nuclei": np.zeros((2, 192, 256), np.uint8),
            "type/nuclei_type": np.zeros((192, 256), np.uint8)}
    for ty in range(3):
        for tx in range(4):
            if (tx + ty) % 3 == 0:  # some tiles never written: they read as zeros
                continue
            p = rng.integers(0, 256, (2, 64, 64), dtype=np.uint8)
            t = rng.integers(0, 7, (64, 64), dtype=np.uint8)
            full["prob/nuclei"][:, ty * 64:ty * 64 + 64, tx * 64:tx * 64 + 64] = p
            full["type/nuclei_type"][ty * 64:ty * 64 + 64, tx * 64:tx * 64 + 64] = t
            store.write(Tile(tx * 64, ty * 64, 64, 8), {"nuclei": p}, {"nuclei_type": t})
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    for name, want in full.items():
        assert (np.asarray(group[name][...]) == want).all()
    again = MapStore.open(tmp_path / "m.zarr")
    for box in (Box(0, 0, 256, 192), Box(30, 5, 170, 150), Box(64, 64, 128, 128)):
        prob, types = again.read(box)
        assert (prob["nuclei"] == full["prob/nuclei"][:, box.y0:box.y1, box.x0:box.x1]).all()
        assert (types["nuclei_type"] == full["type/nuclei_type"][box.y0:box.y1, box.x0:box.x1]).all()
