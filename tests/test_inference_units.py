"""Units of the segmentation engine that need no slide: plan, store, tracker, inputs."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cerberus_cli.cohort.inputs import collect_inputs, read_manifest
from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.inference.engine import Engine
from cerberus_cli.inference.mapstore import Box, ChunkTracker, MapStore, TissueMap
from cerberus_cli.inference.tile_plan import Tile, network_work_ratio, plan_tiles
from cerberus_cli.model.config import light_config
from cerberus_cli.model.device import resolve_device, resolve_precision
from cerberus_cli.model.network import CerberusNet


def test_geometry_work_ratios():
    assert network_work_ratio(144, 152) == pytest.approx(9.68, abs=0.01)
    assert network_work_ratio(720, 152) == pytest.approx(2.02, abs=0.01)


def test_plan_keeps_only_tiles_touching_tissue():
    slide = SimpleNamespace(dimensions=(8000, 4000), mpp=0.25)  # 4000 x 2000 at 0.5
    mask = np.zeros((125, 250), bool)  # 8 um/px... of level 0 at 0.25 -> 32x
    mask[0:10, 0:10] = True            # covers grid px 0..160
    tiles = plan_tiles(slide, SimpleNamespace(mask=mask, mpp=8.0), 0.5, tile=720, margin=152)
    assert tiles == [Tile(0, 0, 720, 152)]
    assert tiles[0].input_box == (-152, -152, 1024, 1024)
    everything = plan_tiles(slide, None, 0.5, tile=720, margin=152)
    assert len(everything) == 6 * 3


def test_tracker_releases_chunks_only_when_their_window_is_complete():
    tiles = [Tile(x, y, 100, 10) for y in range(0, 400, 100) for x in range(0, 400, 100)]
    tracker = ChunkTracker(tiles, 400, 400, chunk=200, margin=50)
    assert len(tracker.chunks) == 4
    ready = []
    for t in tiles:
        ready += [c.index for c in tracker.tile_done(t)]
    assert sorted(ready) == [0, 1, 2, 3]
    # chunk 0 (core 0..200) needs tiles up to 250 -> the 3rd row/column
    tracker = ChunkTracker(tiles, 400, 400, chunk=200, margin=50)
    first = [tracker.tile_done(t) for t in tiles[:10]]
    assert all(not r for r in first)
    assert [c.index for c in tracker.tile_done(tiles[10])] == [0]


def test_mapstore_round_trip(tmp_path):
    cfg = light_config()
    store = MapStore.create(tmp_path / "m.zarr", cfg, 250, 130, tile=64)
    assert (store.width, store.height) == (256, 192)
    prob = {h: np.full((2, 64, 64), 7, np.uint8) for h in store.instance_heads}
    types = {h: np.full((64, 64), 3, np.uint8) for h in store.type_heads}
    store.write(Tile(64, 128, 64, 0), prob, types)
    again = MapStore.open(tmp_path / "m.zarr")
    p, t = again.read(Box(60, 120, 130, 192))
    assert set(p) == {"gland", "lumen", "nuclei"} and set(t) == {"gland_type", "nuclei_type"}
    assert p["nuclei"][:, 8:, 4:68].min() == 7 and p["nuclei"][:, :8].max() == 0
    assert t["nuclei_type"][8:, 4:68].min() == 3


def test_tissue_map_assembles_cells_from_owning_tiles():
    tm = TissueMap(width=64, height=32, stride=16, crop=1, grid_mpp=0.5)
    assert tm.shape == (2, 4) and tm.mpp == 8.0
    for x, cls in ((0, 2), (32, 5)):
        probs = np.zeros((9, 4, 4), np.float16)  # tile 32 + 2*16 margin = 64 px -> 4 cells
        probs[cls] = 1
        tm.add(Tile(x, 0, 32, 16), probs)
    assert tm.classes.tolist() == [[2, 2, 5, 5], [2, 2, 5, 5]]


def test_engine_crops_and_quantises_and_survives_batch_splitting():
    cfg = light_config()
    model = CerberusNet(cfg).eval()
    engine = Engine(model, cfg, torch.device("cpu"), None, margin=16, tile=32, channels_last=False)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    maps = engine(images)
    assert maps.prob["nuclei"].shape == (3, 2, 32, 32) and maps.prob["nuclei"].dtype == np.uint8
    assert maps.types["nuclei_type"].shape == (3, 32, 32)
    assert maps.tissue.shape[:2] == (3, 9)
    engine.max_batch = 1  # as after a CUDA out-of-memory
    again = engine(images)
    np.testing.assert_array_equal(again.types["gland_type"], maps.types["gland_type"])
    assert np.abs(again.prob["gland"].astype(int) - maps.prob["gland"]).max() <= 1


def test_device_and_precision_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(CerberusError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(CerberusError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CerberusError, match="CUDA is not available"):
            resolve_device("cuda")


def test_collect_inputs_folders_globs_and_duplicates(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "s1.svs").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "s2.tiff").write_bytes(b"x")
    items = collect_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "*.tiff")])
    assert [i.path.name for i in items] == ["s1.svs", "s2.tiff"]
    (tmp_path / "b" / "s1.svs").write_bytes(b"x")
    with pytest.raises(InputError, match="same output name"):
        collect_inputs([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(InputError, match="matches no file"):
        collect_inputs([str(tmp_path / "*.ndpi")])


def test_manifests_gdc_and_csv(tmp_path):
    (tmp_path / "uuid-1").mkdir()
    (tmp_path / "uuid-1" / "TCGA-A.svs").write_bytes(b"x")
    gdc = tmp_path / "gdc_manifest.txt"
    gdc.write_text("id\tfilename\tmd5\tsize\tstate\nuuid-1\tTCGA-A.svs\tabc\t1\treleased\n"
                   "uuid-2\tTCGA-B.svs\tdef\t1\treleased\n")
    items = read_manifest(gdc)
    assert items[0].path == tmp_path / "uuid-1" / "TCGA-A.svs" and items[0].id == "uuid-1"
    assert items[1].path == tmp_path / "TCGA-B.svs"  # missing: reported later as failed
    csv = tmp_path / "slides.csv"
    csv.write_text("path,mpp\nx/one.tif,0.25\n/abs/two.svs,\n")
    items = read_manifest(csv)
    assert items[0].path == tmp_path / "x" / "one.tif" and items[0].mpp == 0.25
    assert items[1].mpp is None
    bad = tmp_path / "bad.csv"
    bad.write_text("file,size\na,1\n")
    with pytest.raises(InputError, match="not a manifest"):
        read_manifest(bad)
    csv.write_text("path,mpp\na.svs,fast\n")
    with pytest.raises(InputError, match="line 2"):
        read_manifest(csv)


def test_objects_off_the_tissue_mask_are_dropped():
    import numpy as np
    from shapely.geometry import box

    from cerberus_cli.core.records import make_record
    from cerberus_cli.inference.pipeline import TissueFilter
    from cerberus_cli.slides import TissueMask

    tissue = np.zeros((100, 100), bool)
    tissue[:, :50] = True  # left half, mask at 4 um/px; slide at 0.5 um/px (8 px per cell)
    keep = TissueFilter(TissueMask(tissue, 4.0), 0.5)

    def at(x: float) -> object:
        return make_record(box(x - 2, 100, x + 2, 104), "nuclei", 2, "epithelial", 1.0, 0.5)

    inside, margin, outside = at(100.0), at(50 * 8 + 12), at(70 * 8)
    assert keep([inside, margin, outside]) == [inside, margin]
    assert TissueFilter(None, 0.5)([outside]) == [outside]
    assert TissueFilter(TissueMask(np.ones((4, 4), bool), 4.0), 0.5)([outside]) == [outside]
