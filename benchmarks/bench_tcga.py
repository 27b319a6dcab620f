"""A TCGA-sized slide: segment's CPU side, its memory, the share of each stage, and GPU-days.

Run from the repository root (after ``bench_replay.py --inputs consep`` has cached the
real-density maps):

    nice -n 10 .venv/bin/python benchmarks/bench_tcga.py --size 40000x30000
    nice -n 10 .venv/bin/python benchmarks/bench_tcga.py --size 20000x15000 --also 10000x7500

For each size:

1. ``cerberus synth slide`` writes a phantom pyramidal SVS at 0.5 um/px (no truth;
   timed, cached); segment's own tissue detection plans its tiles.
2. The maps stand in for the network: the maps the real-data model saved for the
   real-crop mosaic (``bench_replay.py`` input ``consep``, the densest input: real colon
   tissue) repeated over the slide's grid (:class:`PeriodicMaps`), so every tissue tile
   carries real-density maps.
3. The CPU side is replayed (:func:`cerberus_cli.inference.replay.replay_slide`: tile
   reads, map store, chunk post-processing in worker processes, GeoParquet + overlay)
   with ``--workers`` processes: CPU-seconds per stage, wall time, peak resident
   memory of the main process and of the largest worker.
4. The network alone is measured on the CPU for ``--network-seconds`` (default tile
   geometry, random input; ``bench_segment.network_throughput``): its CPU-seconds per
   output Mpx give the network's share on a CPU. On a GPU nothing here is measured.
5. The slides per GPU-day the CPU side allows, and the GPU network speed that 599
   slides per GPU-day would need, with the assumptions printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from cerberus_cli.inference.replay import STAGES, SavedMaps, replay_slide, start_pool
from cerberus_cli.inference.tile_plan import Tile
from cerberus_cli.model.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SECONDS_PER_DAY = 86_400
TARGET_SLIDES_PER_DAY = 599


class PeriodicMaps:
    """Saved maps repeated over a larger grid: tile (x, y) gets the source's (x mod P, y mod P).

    The period is the source's valid grid cut down to whole tiles, so every tile of the
    large grid is one whole tile of the source.
    """

    def __init__(self, source: SavedMaps, tile: int, width: int, height: int) -> None:
        import zarr

        attrs = cast(dict[str, Any], zarr.open_group(str(source.path), mode="r")
                     .attrs["cerberus"])["valid_extent"]
        self.period = ((attrs["y"][1] // tile) * tile, (attrs["x"][1] // tile) * tile)
        if min(self.period) == 0:
            raise SystemExit(f"{source.path}: smaller than one {tile} px tile")
        self.source, self.tile_px = source, tile
        self._shape = (-(-height // tile) * tile, -(-width // tile) * tile)
        self._cache: dict[tuple[int, int], tuple[dict, dict]] = {}

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the large grid, padded to whole tiles."""
        return self._shape

    def tile(self, tile: Tile) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The source maps of the tile at the same place in the period."""
        at = (tile.y % self.period[0], tile.x % self.period[1])
        if at not in self._cache:
            self._cache[at] = self.source.tile(Tile(at[1], at[0], tile.size, tile.margin))
        return self._cache[at]


def make_slide(path: Path, size: str, seed: int) -> float:
    """Write the phantom slide (if missing); return the seconds it took (0 when cached)."""
    if path.exists():
        return 0.0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cerberus_cli", "synth", "slide", str(path), "--size",
                    size, "--seed", str(seed), "--no-truth", "--overwrite"], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


def network_cpu_s_per_mpx(model: str, seconds: float) -> float:
    """CPU-seconds of the network alone per output Mpx, default geometry, on this CPU."""
    from bench_segment import network_throughput

    from cerberus_cli.inference.tile_plan import DEFAULT_MARGIN, DEFAULT_TILE
    from cerberus_cli.model.device import resolve_device
    from cerberus_cli.model.registry import load_model

    loaded, device = load_model(model), resolve_device("cpu")
    network_throughput(loaded, device, None, DEFAULT_TILE, DEFAULT_MARGIN, 1, 0.1)  # warm
    c0, t0 = time.process_time(), time.perf_counter()
    rate = network_throughput(loaded, device, None, DEFAULT_TILE, DEFAULT_MARGIN, 1, seconds)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return cpu / (rate * wall)  # Mpx done = rate x wall (model preparation included)


def measure(size: str, args: argparse.Namespace, config: Any, source: SavedMaps) -> dict:
    """Write (or reuse) the slide of ``size`` and replay its CPU side once."""
    from cerberus_cli.slides import detect_tissue, open_slide

    width, height = (int(v) for v in size.lower().split("x"))
    slide = args.cache / f"tcga_{width}x{height}_s{args.seed}.svs"
    made_s = make_slide(slide, size, args.seed)
    with open_slide(slide) as s:
        mask = detect_tissue(s)
        tissue = float(mask.mask.mean())
    maps = PeriodicMaps(source, args.tile, width, height)
    pool = start_pool(args.workers) if args.workers > 0 else None
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        try:
            r = replay_slide(slide, maps, Path(tmp) / "objects.parquet", config, pool,
                             tile=args.tile, margin=args.margin, chunk=args.chunk)
        finally:
            if pool is not None:
                pool.shutdown()
    return {"size": (width, height), "slide": slide, "made_s": made_s, "tissue": tissue,
            "result": r}


def report(m: dict, net_cpu_per_mpx: float, workers: int) -> None:
    r = m["result"]
    w, h = m["size"]
    cpu = r.cpu_s
    total = r.total_cpu_s
    objects = sum(r.counts.values())
    net = net_cpu_per_mpx * r.output_mpx
    print(f"\n## slide {w} x {h} px at 0.5 um/px ({m['slide'].name}"
          + (f", written in {m['made_s']:.0f} s" if m["made_s"] else ", cached") + ")")
    print(f"tissue detected: {100 * m['tissue']:.1f} % of the slide; {r.tiles} tiles = "
          f"{r.output_mpx:.1f} Mpx of network output, {r.chunks} chunks; "
          f"objects {objects:,} {r.counts}")
    print(f"CPU side, {workers} worker(s): wall {r.wall_s:.0f} s, CPU {total:.1f} s = "
          f"{r.mpx_per_cpu_s():.2f} Mpx/CPU-s, {objects / total:,.0f} objects/CPU-s; "
          f"peak RSS main {r.peak_rss_mib['main']:.0f} MiB, largest worker "
          f"{r.peak_rss_mib['worker']:.0f} MiB")
    print("stage | CPU s | share of CPU side | share with the network on this CPU")
    for s in STAGES:
        print(f"{s} | {cpu[s]:.1f} | {100 * cpu[s] / total:.0f} % | "
              f"{100 * cpu[s] / (total + net):.1f} %")
    print(f"network (CPU, extrapolated: {net_cpu_per_mpx:.2f} CPU-s per Mpx measured on "
          f"random tiles) | {net:.0f} | - | {100 * net / (total + net):.1f} %")
    per_slide = SECONDS_PER_DAY / TARGET_SLIDES_PER_DAY
    print(f"{TARGET_SLIDES_PER_DAY} slides per GPU-day = {per_slide:.0f} s per slide like this "
          f"one: the network must give {r.output_mpx / per_slide:.2f} Mpx/s on the GPU (not "
          f"measured: no GPU), and the CPU side needs {total / per_slide:.2f} CPU cores busy "
          f"beside it (measured CPU-s / {per_slide:.0f} s); one core alone allows "
          f"{SECONDS_PER_DAY / total:,.0f} slides per day")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="40000x30000", help="slide WIDTHxHEIGHT at 0.5 um/px")
    ap.add_argument("--also", default=None, help="a second size, to see whether memory grows")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--network-seconds", type=float, default=20.0)
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "cerberus-bench-replay")
    ap.add_argument("--tile", type=int, default=720)
    ap.add_argument("--margin", type=int, default=152)
    ap.add_argument("--chunk", type=int, default=2048)
    args = ap.parse_args()
    maps_dir = args.cache / "seg_consep_mosaic_default"
    if not (maps_dir / "consep_mosaic.run.json").exists():
        raise SystemExit(f"{maps_dir}: run benchmarks/bench_replay.py --inputs consep first")
    source = SavedMaps(maps_dir / "consep_mosaic.maps.zarr")
    loaded_config = load_checkpoint(ROOT / "models" / "default.pt").config
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    runs = [measure(s, args, loaded_config, source) for s in [args.also, args.size] if s]
    net = network_cpu_s_per_mpx("default", args.network_seconds)
    for m in runs:
        report(m, net, args.workers)
    if len(runs) == 2:
        a, b = (m["result"] for m in runs)
        print(f"\npeak RSS, {b.output_mpx / a.output_mpx:.1f}x the output: main "
              f"{b.peak_rss_mib['main'] / a.peak_rss_mib['main']:.2f}x, worker "
              f"{b.peak_rss_mib['worker'] / a.peak_rss_mib['worker']:.2f}x")


if __name__ == "__main__":
    main()
