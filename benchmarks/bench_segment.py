"""Segmentation speed and memory on phantom slides.

Measures, side by side in one run:
  * network-only throughput (kept output megapixels/s) for the reference geometry
    (448 in / 144 out) and the default geometry (1024 in / 720 out);
  * end-to-end throughput of ``cerberus segment`` on a phantom slide, and its ratio to
    the network-only time for the same tiles (reading, post-processing and writing
    hidden behind the network give a ratio near 1);
  * peak RSS for two slide sizes 4x apart in area;
  * the time for a TCGA-sized slide (28,000 x 57,000 px at 0.5 um/px, 40% tissue)
    extrapolated from the measured end-to-end throughput.

Usage:
    python benchmarks/bench_segment.py [--size 2048] [--device auto] [--model default]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cerberus_cli.inference.engine import Engine
from cerberus_cli.inference.tiles import DEFAULT_MARGIN, DEFAULT_TILE, REFERENCE_TILE
from cerberus_cli.model.device import (
    prepare_model,
    resolve_device,
    resolve_precision,
)
from cerberus_cli.model.registry import load_model

CERBERUS = [sys.executable, "-m", "cerberus_cli"]
TCGA_PX = 28_000 * 57_000 * 0.4


def network_throughput(loaded, device, dtype, tile: int, margin: int, batch: int, seconds: float) -> float:
    """Kept output megapixels per second of the network alone (random uint8 input)."""
    model = prepare_model(loaded.model, device, channels_last=True)
    engine = Engine(model, loaded.config, device, dtype, margin, tile)
    side = tile + 2 * margin
    x = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8)
    if device.type == "cuda":
        x = x.pin_memory()
    engine(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        engine(x)
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * batch * tile * tile / (time.perf_counter() - t0) / 1e6


def make_slide(path: Path, size: int, seed: int) -> None:
    if not path.exists():
        subprocess.run(CERBERUS + ["synth", "slide", str(path), "--size", f"{size}x{size}",
                                   "--seed", str(seed)], check=True, capture_output=True)


def segment(slide: Path, out: Path, args) -> dict:
    cmd = CERBERUS + ["-q", "segment", str(slide), "-o", str(out), "--overwrite",
                      "--device", args.device, "--batch-size", str(args.batch_size),
                      "--workers", str(args.workers), "--post-workers", str(args.post_workers)]
    if args.model:
        cmd += ["--model", args.model]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    record = json.loads((out / f"{slide.stem}.run.json").read_text())
    record["wall_s"] = wall
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="side of the smaller phantom slide, px")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--post-workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0, help="per network-only measurement")
    ap.add_argument("--work", default=None, help="folder for slides and outputs (default: temp)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_precision("auto", device)
    loaded = load_model(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="cerberus-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"# device: {name}; model: {loaded.config.name} ({loaded.config.encoder}, "
          f"stem stride {loaded.config.stem_stride}); torch threads {torch.get_num_threads()}")

    ref = network_throughput(loaded, device, dtype, REFERENCE_TILE, DEFAULT_MARGIN, args.batch_size, args.seconds)
    default = network_throughput(loaded, device, dtype, DEFAULT_TILE, DEFAULT_MARGIN,
                                 max(1, args.batch_size // 4) if device.type == "cpu" else args.batch_size,
                                 args.seconds)
    print(f"network only, reference geometry (448 in / 144 out): {ref:.3f} output Mpx/s")
    print(f"network only, default geometry (1024 in / 720 out):  {default:.3f} output Mpx/s "
          f"({default / ref:.2f}x the reference)")

    results = {}
    for factor in (1, 2):
        side = args.size * factor
        slide = work / f"phantom_{side}.svs"
        make_slide(slide, side, seed=7)
        rec = segment(slide, work / f"out_{side}", args)
        kept_px = rec["tiles"] * DEFAULT_TILE ** 2
        net_only = kept_px / (default * 1e6)
        results[side] = rec
        total = rec["timings"]["total_s"]
        print(f"slide {side}x{side}: {rec['tiles']} tiles, {rec['objects']:,} objects, "
              f"segment {total:.1f} s (process wall {rec['wall_s']:.1f} s), "
              f"end-to-end {kept_px / total / 1e6:.3f} output Mpx/s, "
              f"end-to-end / network-only = {total / net_only:.2f}, "
              f"peak RSS main {rec['peak_memory']['main_rss_mib']:.0f} MiB, "
              f"post-processing worker {rec['peak_memory'].get('postprocess_worker_rss_mib', 0):.0f} MiB")
    small, large = results[args.size], results[2 * args.size]
    ratio = large["peak_memory"]["main_rss_mib"] / small["peak_memory"]["main_rss_mib"]
    print(f"peak RSS ratio (4x area): {ratio:.2f}")
    rate = large["tiles"] * DEFAULT_TILE ** 2 / large["timings"]["total_s"]
    print(f"TCGA-sized slide (28,000 x 57,000 px at 0.5 um/px, 40% tissue), extrapolated: "
          f"{TCGA_PX / rate / 60:.1f} min")


if __name__ == "__main__":
    main()
