"""Nucleus type from per-nucleus encoder features: does object pooling keep cell type?

Makes a phantom slide with exact truth, segments it, pools the bundled encoder's features
under every predicted nucleus (``cerberus features --kind objects``), labels each nucleus
with the type of the true nucleus under its centroid, and probes type from the features
(``cerberus probe``: outer grouped CV, groups = 256 px blocks so neighbours never sit on
both sides of a split). The same with a randomly initialised encoder as the baseline.

    .venv/bin/python benchmarks/bench_object_probe.py [--size 2048] [--seed 11]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq

CLI = [sys.executable, "-m", "cerberus_cli", "-q"]


def run(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True)


def label_features(features: Path, truth: Path, block: int, out: Path) -> int:
    """Add ``label`` (true nucleus type under the centroid) and ``group`` (spatial block)."""
    table = pq.read_table(features)
    frame = table.select(["uuid", "x", "y"]).to_pandas()
    points = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame.x, frame.y), crs=None)
    nuclei = gpd.read_parquet(truth).query("task == 'nuclei'")[["class_name", "geometry"]]
    hit = gpd.sjoin(points, nuclei, how="left", predicate="within").drop_duplicates("uuid")
    labels = hit.set_index("uuid").loc[frame.uuid, "class_name"]
    keep = labels.notna().to_numpy()
    groups = (frame.x // block).astype(int).astype(str) + "_" + (frame.y // block).astype(int).astype(str)
    table = table.filter(pa.array(keep)).drop_columns([c for c in ("label", "group") if c in table.column_names])
    table = table.append_column("label", pa.array(labels[keep].astype(str).tolist()))
    table = table.append_column("group", pa.array(groups[keep].tolist()))
    pq.write_table(table, out)
    return int(keep.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--block", type=int, default=256, help="Group block side, level-0 px.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        slide = d / "ph.svs"
        run("synth", "slide", str(slide), "--size", f"{args.size}x{args.size}", "--seed", str(args.seed))
        run("segment", str(slide), "-o", str(d / "seg"), "--no-overlay")
        rows = {}
        for name, extra in (("bundled", []), ("random", ["--random-init", "0"])):
            t = time.perf_counter()
            run("features", str(slide), "--kind", "objects", "--objects", str(d / "seg" / "ph.parquet"),
                "--tasks", "nuclei", "-o", str(d / name), *extra)
            seconds = time.perf_counter() - t
            feats = next((d / name).glob("*.parquet"))
            labelled = d / f"{name}.labelled.parquet"
            n = label_features(feats, slide.with_name("ph.truth.parquet"), args.block, labelled)
            run("probe", str(labelled), "-o", str(d / f"{name}.probe"), "--seeds", "1",
                "--no-knn-baseline", "--c-grid", "0.001,0.01,0.1")
            report = json.loads((d / f"{name}.probe" / "report.json").read_text())
            rows[name] = (n, seconds, report)
        print(f"phantom {args.size}^2 seed {args.seed}; groups: {args.block} px blocks; outer grouped CV")
        print("encoder | nuclei | features s | balanced accuracy [CI] | accuracy | macro F1")
        for name, (n, seconds, r) in rows.items():
            ci = r.get("balanced_accuracy_ci", [float("nan")] * 2)
            print(f"{name} | {n} | {seconds:.1f} | {r['balanced_accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
                  f"{r['accuracy']:.3f} | {r['macro_f1']:.3f}")


if __name__ == "__main__":
    main()
