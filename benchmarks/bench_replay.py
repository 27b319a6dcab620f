"""Replay benchmark of segment's CPU side: everything but the network, from saved maps.

Run from the repository root:

    nice -n 10 .venv/bin/python benchmarks/bench_replay.py
    nice -n 10 .venv/bin/python benchmarks/bench_replay.py --baseline HEAD~3

The first run makes a phantom slide (``cerberus synth slide``) and segments it once
with ``--save-maps`` (minutes on a CPU); both are cached (``--cache``). Each
measurement then replays the slide's CPU side (:mod:`cerberus_cli.inference.replay`:
tile reads, map store, chunk post-processing, GeoParquet + overlay writing) in a
fresh process with 1 and 2 worker processes, and prints output megapixels (the
network's kept pixels) per CPU-second of every stage and per wall-second.

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

ROOT = Path(__file__).resolve().parents[1]
#: The modules of the CPU side a baseline revision supplies (post-processing, map store).
POST_FILES = ("cerberus_cli/postprocess/instances.py", "cerberus_cli/postprocess/polygons.py",
              "cerberus_cli/postprocess/chunks.py", "cerberus_cli/postprocess/types.py",
              "cerberus_cli/inference/mapstore.py")


def prepare(cache: Path, size: int, seed: int, model: str | None) -> tuple[Path, Path, dict]:
    """The cached phantom slide, its saved maps and its run record (made if missing)."""
    cache.mkdir(parents=True, exist_ok=True)
    slide = cache / f"phantom{size}_s{seed}.svs"
    out = cache / f"seg{size}_s{seed}"
    record = out / f"{slide.stem}.run.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not slide.exists():
        print(f"making {slide} ...", flush=True)
        subprocess.run([sys.executable, "-m", "cerberus_cli", "synth", "slide", str(slide),
                        "--size", f"{size}x{size}", "--seed", str(seed), "--no-truth",
                        "--overwrite"], check=True, env=env)
    if not record.exists():
        print(f"segmenting {slide.name} once with --save-maps (the network runs here) ...",
              flush=True)
        cmd = [sys.executable, "-m", "cerberus_cli", "segment", str(slide), "-o", str(out),
               "--save-maps", "--overwrite", "--no-overlay"]
        subprocess.run(cmd + (["--model", model] if model else []), check=True, env=env)
    return slide, out / f"{slide.stem}.maps.zarr", json.loads(record.read_text())


def baseline_tree(rev: str, into: Path) -> Path:
    """A copy of the current package with the post-processing modules of ``rev``."""
    shutil.copytree(ROOT / "cerberus_cli", into / "cerberus_cli",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for f in POST_FILES:
        text = subprocess.run(["git", "show", f"{rev}:{f}"], cwd=ROOT, check=True,
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
    return (f"{name:>10} | {w} | {r['wall_s']:6.1f} | {cpu['tile_read']:5.1f} | "
            f"{cpu['map_store']:5.1f} | {cpu['postprocess']:6.1f} | {cpu['write']:5.1f} | "
            f"{total:6.1f} | {r['output_mpx'] / total:5.2f} | "
            f"{r['output_mpx'] / post_write:5.2f} | {r['output_mpx'] / r['wall_s']:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="phantom side, px (default 4096)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--model", default=None, help="model for the one segment run (default: "
                    "the bundled model)")
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "cerberus-bench-replay")
    ap.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    ap.add_argument("--baseline", default=None, help="git revision of the post-processing "
                    "to compare with")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-read-tiles", dest="read_tiles", action="store_false")
    ap.add_argument("--no-clip", dest="clip", action="store_false",
                    help="compare without clipping objects to the slide (baselines lack it)")
    # --- child mode (internal) ---
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--slide", help=argparse.SUPPRESS)
    ap.add_argument("--maps", help=argparse.SUPPRESS)
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

    slide, maps, record = prepare(args.cache, args.size, args.seed, args.model)
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        variants = [("current", ROOT)]
        if args.baseline:
            rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT,
                                 check=True, capture_output=True, text=True).stdout.strip()
            variants.append((f"base {rev}", baseline_tree(args.baseline, Path(tmp) / "base")))
        results: dict[tuple[str, int], list[dict]] = {}
        outputs: dict[tuple[str, int], Path] = {}
        t0 = time.perf_counter()
        for rep in range(args.repeat):
            for w in workers:
                order = variants if (rep + w) % 2 else variants[::-1]
                for name, root in order:
                    out = Path(tmp) / f"{name.split()[0]}_w{w}_r{rep}.parquet"
                    results.setdefault((name, w), []).append(run_child(
                        root, w, slide, maps, record, out, args.read_tiles,
                        args.clip and not args.baseline))
                    outputs[(name, w)] = out
        first = results[(variants[0][0], workers[0])][0]
        print(f"# phantom {args.size}x{args.size} (seed {args.seed}), model "
              f"{record['model']['name']}: {first['tiles']} tiles of {record['options']['tile']} "
              f"px = {first['output_mpx']:.2f} Mpx of network output, {first['chunks']} chunks "
              f"of {record['options']['chunk']} px; objects {first['counts']}")
        print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"best of {args.repeat} by total CPU; run took {time.perf_counter() - t0:.0f} s")
        print("   variant | workers | wall s | read | store | post | write | CPU s | "
              "Mpx/CPU-s | Mpx/CPU-s post+write | Mpx/wall-s")
        for (name, w), rs in results.items():
            best = min(rs, key=lambda r: sum(r["cpu_s"].values()))
            print(line(name, w, best))
        if args.baseline and args.clip:
            # Baselines cannot clip: compare unclipped, then show what clipping does.
            out = Path(tmp) / "clipped.parquet"
            r = run_child(ROOT, workers[0], slide, maps, record, out, args.read_tiles, True)
            print(line("clipped", workers[0], r))
            ref_unclipped = outputs[(variants[0][0], workers[0])]
            w0, h0 = record["input"]["width"], record["input"]["height"]
            print(f"objects reaching outside the {w0}x{h0} slide: "
                  f"{outside(ref_unclipped, w0, h0)} unclipped, {outside(out, w0, h0)} clipped")
        ref = outputs[(variants[0][0], workers[0])]
        for key, path in outputs.items():
            if path != ref:
                ok, why = same_objects(ref, path)
                print(f"objects {key[0]} w{key[1]} vs current w{workers[0]}: "
                      f"{'IDENTICAL' if ok else 'DIFFERENT'}: {why}")
        if args.baseline:
            cur = {w: min(results[("current", w)], key=lambda r: sum(r["cpu_s"].values()))
                   for w in workers}
            base = {w: min(results[(variants[1][0], w)],
                           key=lambda r: sum(r["cpu_s"].values())) for w in workers}
            for w in workers:
                print(f"speed-up, {w} worker(s): post-processing CPU "
                      f"{base[w]['cpu_s']['postprocess'] / cur[w]['cpu_s']['postprocess']:.2f}x, "
                      f"total CPU {sum(base[w]['cpu_s'].values()) / sum(cur[w]['cpu_s'].values()):.2f}x, "
                      f"wall {base[w]['wall_s'] / cur[w]['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
