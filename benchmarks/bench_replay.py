"""Replay benchmark of segment's CPU side: everything but the network, from saved maps.

Run from the repository root:

    nice -n 10 .venv/bin/python benchmarks/bench_replay.py
    nice -n 10 .venv/bin/python benchmarks/bench_replay.py --baseline HEAD~3

Inputs (``--inputs``, default all three), each segmented once with ``--save-maps``
(minutes on a CPU) and cached (``--cache``):

* ``phantom``: a phantom slide (``cerberus synth slide``), segmented with the phantom
  model it was made for;
* ``cmu``: real tissue, ``tests/data/cmu_small_region.svs`` (an Aperio slide, CC0),
  segmented with the bundled real-data model;
* ``consep``: real colon tissue at real density, a mosaic of the real crop
  ``tests/data/consep_test10_crop.jpg`` (mirrored copies, 0.25 um/px, written as an
  SVS), segmented with the bundled real-data model.

Each measurement then replays the slide's CPU side (:mod:`cerberus_cli.inference.replay`:
tile reads, map store, chunk post-processing, GeoParquet + overlay writing) in a
fresh process with 1 and 2 worker processes, and prints output megapixels (the
network's kept pixels) and objects per CPU-second of every stage, per wall-second,
and the input's nuclei per megapixel of tissue (detected tissue at 0.5 um/px).

``--baseline REV`` also replays with the post-processing and map-store modules of
git revision REV (the rest of the tree as it is now), interleaved with the current ones in the
same run, and checks that both give the same objects (UUIDs, classes,
probabilities, parents and WKB geometries, row for row).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Side of the real-crop mosaic, px at its 0.25 um/px (2880 px at the model's 0.5 um/px).
CONSEP_SIDE = 5760
#: The modules of the CPU side a baseline revision supplies (post-processing, map store).
POST_FILES = ("cerberus_cli/postprocess/instances.py", "cerberus_cli/postprocess/polygons.py",
              "cerberus_cli/postprocess/chunks.py", "cerberus_cli/postprocess/types.py",
              "cerberus_cli/inference/mapstore.py")


def _cerberus(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cerberus_cli", *args], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def _mosaic(crop: Path, side: int) -> np.ndarray:
    """``crop`` repeated over ``side`` x ``side`` px, every other copy mirrored (no seams)."""
    import cv2

    img = cv2.cvtColor(cv2.imread(str(crop), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    flips = np.concatenate([np.concatenate([img, img[:, ::-1]], axis=1),
                            np.concatenate([img[::-1], img[::-1, ::-1]], axis=1)])
    reps = (-(-side // (2 * h)), -(-side // (2 * w)), 1)
    return np.ascontiguousarray(np.tile(flips, reps)[:side, :side])


def prepare(name: str, cache: Path, size: int, seed: int) -> tuple[Path, Path, dict]:
    """The cached slide of input ``name``, its saved maps and its run record (made if missing)."""
    cache.mkdir(parents=True, exist_ok=True)
    if name == "phantom":
        slide, model = cache / f"phantom{size}_s{seed}.svs", "phantom"
        if not slide.exists():
            print(f"making {slide} ...", flush=True)
            _cerberus("synth", "slide", str(slide), "--size", f"{size}x{size}", "--seed",
                      str(seed), "--no-truth", "--overwrite")
    elif name == "cmu":
        slide, model = ROOT / "tests" / "data" / "cmu_small_region.svs", "default"
    elif name == "consep":
        slide, model = cache / "consep_mosaic.svs", "default"
        if not slide.exists():
            from cerberus_cli.slides.writer import write_slide

            print(f"making {slide} ...", flush=True)
            write_slide(slide, _mosaic(ROOT / "tests" / "data" / "consep_test10_crop.jpg",
                                       CONSEP_SIDE), 0.25, quality=95, overwrite=True)
    else:
        raise SystemExit(f"unknown input {name!r} (phantom, cmu or consep)")
    out = cache / f"seg_{slide.stem}_{model}"
    record = out / f"{slide.stem}.run.json"
    if not record.exists():
        print(f"segmenting {slide.name} once with --save-maps (the network runs here) ...",
              flush=True)
        _cerberus("segment", str(slide), "-o", str(out), "--save-maps", "--overwrite",
                  "--no-overlay", "--model", model)
    return slide, out / f"{slide.stem}.maps.zarr", json.loads(record.read_text())


def tissue_mpx(slide: Path, grid_mpp: float) -> float:
    """Megapixels of detected tissue at ``grid_mpp`` (segment's own tissue detection)."""
    from cerberus_cli.slides import detect_tissue, open_slide

    with open_slide(slide) as s:
        mask = detect_tissue(s)
    return float(mask.mask.sum()) * (mask.mpp / grid_mpp) ** 2 / 1e6


def baseline_tree(rev: str, into: Path, repo: Path) -> Path:
    """A copy of the current package with the post-processing modules of ``rev``."""
    shutil.copytree(ROOT / "cerberus_cli", into / "cerberus_cli",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for f in POST_FILES:
        text = subprocess.run(["git", "show", f"{rev}:{f}"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout
        (into / f).write_text(text)
    return into


def run_child(root: Path, workers: int, slide: Path, maps: Path, record: dict, out: Path,
              read_tiles: bool, clip: bool) -> dict:
    """One replay in a fresh process importing the package from ``root``."""
    result = out.with_suffix(".json")
    opts = record["options"]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--slide", str(slide),
           "--maps", str(maps), "--model", record["model"]["source"],
           "--workers", str(workers), "--out", str(out), "--json", str(result),
           "--tile", str(opts["tile"]), "--margin", str(opts["margin"]),
           "--chunk", str(opts["chunk"])] + ([] if read_tiles else ["--no-read-tiles"]) \
        + ([] if clip else ["--no-clip"])
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run(cmd, check=True, env=env)
    return json.loads(result.read_text())


def child(args: argparse.Namespace) -> None:
    """Replay once (in this process and its workers) and dump the figures as JSON."""
    from cerberus_cli.inference.replay import replay_slide, start_pool
    from cerberus_cli.model.checkpoint import load_checkpoint

    config = load_checkpoint(args.model).config
    pool = start_pool(args.workers) if args.workers > 0 else None
    try:
        r = replay_slide(args.slide, args.maps, args.out, config, pool, tile=args.tile,
                         margin=args.margin, chunk=args.chunk, read_tiles=args.read_tiles,
                         clip=args.clip)
    finally:
        if pool is not None:
            pool.shutdown()
    import cerberus_cli.postprocess.instances as inst

    Path(args.json).write_text(json.dumps({
        "tiles": r.tiles, "chunks": r.chunks, "output_mpx": r.output_mpx,
        "core_mpx": r.core_mpx, "wall_s": r.wall_s, "cpu_s": r.cpu_s, "counts": r.counts,
        "package": str(Path(inst.__file__).parents[2]),
    }))


def same_objects(a: Path, b: Path) -> tuple[bool, str]:
    """Whether two object files hold the same rows (order, ids, values, geometries)."""
    import pyarrow.parquet as pq

    cols = ["uuid", "task", "class_id", "class_name", "probability", "geometry",
            "parent_uuid", "area_um2"]
    ta, tb = pq.read_table(a, columns=cols), pq.read_table(b, columns=cols)
    if ta.num_rows != tb.num_rows:
        return False, f"{ta.num_rows} vs {tb.num_rows} objects"
    ua, ub = set(ta["uuid"].to_pylist()), set(tb["uuid"].to_pylist())
    if ua != ub:
        return False, f"{len(ua ^ ub)} UUIDs differ"
    for c in cols:
        if not ta[c].equals(tb[c]):
            return False, f"same UUIDs, column {c} differs"
    return True, f"{ta.num_rows} objects identical (UUID set, rows, WKB geometries)"


def outside(path: Path, width: int, height: int) -> int:
    """Objects of an object file whose geometry reaches outside (0, 0, width, height)."""
    import pyarrow.parquet as pq
    import shapely

    b = shapely.bounds(shapely.from_wkb(pq.read_table(path, columns=["geometry"])
                                        ["geometry"].to_numpy(zero_copy_only=False)))
    return int(((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | (b[:, 3] > height)).sum())


def line(name: str, w: int, r: dict) -> str:
    cpu = r["cpu_s"]
    total = sum(cpu.values())
    post_write = cpu["postprocess"] + cpu["write"]
    objects = sum(r["counts"].values())
    return (f"{name:>12} | {w} | {r['wall_s']:6.1f} | {cpu['tile_read']:5.2f} | "
            f"{cpu['map_store']:5.2f} | {cpu['postprocess']:5.2f} | {cpu['write']:5.2f} | "
            f"{total:5.2f} | {r['output_mpx'] / total:5.2f} | {objects / total:6.0f} | "
            f"{r['output_mpx'] / post_write:5.2f} | {r['output_mpx'] / r['wall_s']:5.2f}")


def best(rs: list[dict]) -> dict:
    """The run of ``rs`` with the least total CPU (the least disturbed by other jobs)."""
    return min(rs, key=lambda r: sum(r["cpu_s"].values()))


def bench_input(name: str, args: argparse.Namespace, variants: list[tuple[str, Path]],
                tmp: Path) -> None:
    """Replay one input with every variant and worker count, interleaved; print the table."""
    slide, maps, record = prepare(name, args.cache, args.size, args.seed)
    workers = [int(w) for w in args.workers.split(",")]
    results: dict[tuple[str, int], list[dict]] = {}
    outputs: dict[tuple[str, int], Path] = {}
    t0 = time.perf_counter()
    for rep in range(args.repeat):
        for w in workers:
            order = variants if (rep + w) % 2 else variants[::-1]
            for vname, root in order:
                out = tmp / f"{name}_{vname.split()[0]}_w{w}_r{rep}.parquet"
                results.setdefault((vname, w), []).append(run_child(
                    root, w, slide, maps, record, out, args.read_tiles, args.clip))
                outputs[(vname, w)] = out
    first = results[(variants[0][0], workers[0])][0]
    tissue = tissue_mpx(slide, float(record["model"]["mpp"]))
    nuclei = first["counts"].get("nuclei", 0)
    print(f"\n## input {name}: {slide.name}, {record['input']['width']}x"
          f"{record['input']['height']} px at {record['input']['mpp']:.3g} um/px, model "
          f"{record['options']['model']}: {first['tiles']} tiles of "
          f"{record['options']['tile']} px = {first['output_mpx']:.2f} Mpx of network "
          f"output, {first['chunks']} chunks of {record['options']['chunk']} px")
    print(f"# objects {first['counts']}; tissue {tissue:.2f} Mpx at 0.5 um/px: "
          f"{nuclei / tissue:,.0f} nuclei per Mpx of tissue")
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; best of "
          f"{args.repeat} by total CPU; took {time.perf_counter() - t0:.0f} s")
    print("     variant | workers | wall s | read | store | post | write | CPU s | "
          "Mpx/CPU-s | objects/CPU-s | Mpx/CPU-s post+write | Mpx/wall-s")
    for (vname, w), rs in results.items():
        print(line(vname, w, best(rs)))
    w0, h0 = record["input"]["width"], record["input"]["height"]
    print(f"objects reaching outside the {w0}x{h0} slide: "
          f"{outside(outputs[(variants[0][0], workers[0])], w0, h0)}")
    ref = outputs[(variants[0][0], workers[0])]
    for key, path in outputs.items():
        if path != ref:
            ok, why = same_objects(ref, path)
            print(f"objects {key[0]} w{key[1]} vs current w{workers[0]}: "
                  f"{'IDENTICAL' if ok else 'DIFFERENT'}: {why}")
    if len(variants) > 1:
        for w in workers:
            cur, base = best(results[("current", w)]), best(results[(variants[1][0], w)])
            print(f"speed-up, {w} worker(s): post-processing CPU "
                  f"{base['cpu_s']['postprocess'] / cur['cpu_s']['postprocess']:.2f}x, "
                  f"total CPU {sum(base['cpu_s'].values()) / sum(cur['cpu_s'].values()):.2f}x, "
                  f"wall {base['wall_s'] / cur['wall_s']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", default="phantom,cmu,consep",
                    help="inputs to replay (default phantom,cmu,consep)")
    ap.add_argument("--size", type=int, default=4096, help="phantom side, px (default 4096)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "cerberus-bench-replay")
    ap.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    ap.add_argument("--baseline", default=None, help="git revision of the post-processing "
                    "to compare with")
    ap.add_argument("--repo", type=Path, default=ROOT,
                    help="git repository holding --baseline (default: this tree)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-read-tiles", dest="read_tiles", action="store_false")
    ap.add_argument("--no-clip", dest="clip", action="store_false",
                    help="compare without clipping objects to the slide")
    # --- child mode (internal) ---
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--slide", help=argparse.SUPPRESS)
    ap.add_argument("--maps", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--tile", type=int, default=720, help=argparse.SUPPRESS)
    ap.add_argument("--margin", type=int, default=152, help=argparse.SUPPRESS)
    ap.add_argument("--chunk", type=int, default=2048, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.workers = int(args.workers)
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        variants = [("current", ROOT)]
        if args.baseline:
            rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=args.repo,
                                 check=True, capture_output=True, text=True).stdout.strip()
            variants.append((f"base {rev}", baseline_tree(args.baseline, Path(tmp) / "base",
                                                          args.repo)))
        for name in args.inputs.split(","):
            bench_input(name, args, variants, Path(tmp))


if __name__ == "__main__":
    main()
