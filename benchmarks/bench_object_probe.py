"""Nucleus type from per-nucleus features: do object features keep cell type?

Makes a phantom slide with exact truth, segments it with the bundled model, and labels
each predicted nucleus with the type of the true nucleus under its centroid. Then, side
by side on the same nuclei:

- ``bundled``: the bundled model's object features with the object default levels
  (type heads' hidden layers + layer3, layer4), pooled under each nucleus;
- ``bundled, encoder only``: the same model's encoder levels layer2, layer3, layer4 (the
  former default);
- ``random``: a randomly initialised model of the same architecture, default levels;
- ``random, encoder only``: the same random model's encoder levels;
- ``type head``: the bundled model's own nucleus type (``segment``'s class vote), the
  upper reference a probe on its features is measured against.

Each feature set is probed with ``cerberus probe`` (linear SVM, C by grouped CV inside
each outer fold, outer 5-fold grouped CV, groups = 256 px blocks so neighbours never sit
on both sides of a split); the type head is scored with the same metrics and the same
group bootstrap.

    .venv/bin/python benchmarks/bench_object_probe.py [--size 2048] [--seed 5]
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
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cerberus_cli.transfer.metrics import group_bootstrap, metrics

CLI = [sys.executable, "-m", "cerberus_cli", "-q"]
ENCODER_ONLY = "layer2,layer3,layer4"
CONFIGS = (
    ("bundled", []),
    ("bundled, encoder only", ["--layers", ENCODER_ONLY]),
    ("random", ["--random-init", "0"]),
    ("random, encoder only", ["--random-init", "0", "--layers", ENCODER_ONLY]),
)


def run(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True)


def truth_labels(uuids, xs, ys, truth: Path) -> np.ndarray:
    """Type of the true nucleus under each centroid (None where there is none)."""
    points = gpd.GeoDataFrame({"uuid": uuids}, geometry=gpd.points_from_xy(xs, ys), crs=None)
    nuclei = gpd.read_parquet(truth).query("task == 'nuclei'")[["class_name", "geometry"]]
    hit = gpd.sjoin(points, nuclei, how="left", predicate="within").drop_duplicates("uuid")
    return hit.set_index("uuid").loc[list(uuids), "class_name"].to_numpy()


def blocks(xs: np.ndarray, ys: np.ndarray, block: int) -> np.ndarray:
    return np.array([f"{int(x // block)}_{int(y // block)}" for x, y in zip(xs, ys)])


def label_features(features: Path, truth: Path, block: int, out: Path) -> int:
    """Add ``label`` (true nucleus type under the centroid) and ``group`` (spatial block)."""
    table = pq.read_table(features)
    frame = table.select(["uuid", "x", "y"]).to_pandas()
    labels = truth_labels(frame.uuid, frame.x, frame.y, truth)
    keep = np.array([v is not None and v == v for v in labels])
    groups = blocks(frame.x.to_numpy(), frame.y.to_numpy(), block)
    table = table.filter(pa.array(keep)).drop_columns([c for c in ("label", "group") if c in table.column_names])
    table = table.append_column("label", pa.array([str(v) for v in labels[keep]]))
    table = table.append_column("group", pa.array(groups[keep].tolist()))
    pq.write_table(table, out)
    return int(keep.sum())


def head_scores(segmented: Path, truth: Path, block: int, replicates: int) -> dict:
    """The type head's own class (segment output) against the truth, as the probe reports."""
    seg = gpd.read_parquet(segmented).query("task == 'nuclei'")
    labels = truth_labels(seg.uuid.astype(str), seg.centroid_x, seg.centroid_y, truth)
    keep = np.array([v is not None and v == v for v in labels])
    true, pred = labels[keep].astype(str), seg.class_name.to_numpy()[keep].astype(str)
    classes = sorted(set(true) | set(pred))     # metrics average over the true classes
    index = {c: i for i, c in enumerate(classes)}
    yt = np.array([index[c] for c in true])
    yp = np.array([index[c] for c in pred])
    scores = np.eye(len(classes))[yp]
    result: dict = metrics(yt, yp, scores)
    ci = group_bootstrap(yt, [yp], [scores], blocks(seg.centroid_x.to_numpy()[keep],
                                                     seg.centroid_y.to_numpy()[keep], block),
                         replicates, 0.95)
    result["balanced_accuracy_ci"] = list(ci["balanced_accuracy"])
    result["n"] = int(keep.sum())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--block", type=int, default=256, help="Group block side, level-0 px.")
    ap.add_argument("--seeds", type=int, default=1, help="Probe seeds.")
    ap.add_argument("--json", type=Path, help="Also write the rows here.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        slide = d / "ph.svs"
        truth = slide.with_name("ph.truth.parquet")
        run("synth", "slide", str(slide), "--size", f"{args.size}x{args.size}", "--seed", str(args.seed))
        run("segment", str(slide), "-o", str(d / "seg"), "--no-overlay")
        rows = {}
        for i, (name, extra) in enumerate(CONFIGS):
            t = time.perf_counter()
            out = d / f"f{i}"
            run("features", str(slide), "--kind", "objects", "--objects", str(d / "seg" / "ph.parquet"),
                "--tasks", "nuclei", "-o", str(out), *extra)
            seconds = time.perf_counter() - t
            feats = next(out.glob("*.parquet"))
            layers = json.loads(pq.read_schema(feats).metadata[b"cerberus_features"])["layers"]
            labelled = d / f"f{i}.labelled.parquet"
            n = label_features(feats, truth, args.block, labelled)
            run("probe", str(labelled), "-o", str(d / f"p{i}"), "--seeds", str(args.seeds),
                "--no-knn-baseline", "--c-grid", "0.001,0.01,0.1")
            report = json.loads((d / f"p{i}" / "report.json").read_text())
            rows[name] = {"n": n, "seconds": seconds, "layers": ",".join(layers),
                          "dim": pq.read_table(feats, columns=["features"]).schema.field("features").type.list_size,
                          **{k: report[k] for k in ("balanced_accuracy", "balanced_accuracy_ci",
                                                    "accuracy", "macro_f1", "confusion_matrix")}}
        head = head_scores(d / "seg" / "ph.parquet", truth, args.block, 1000)
        rows["type head (reference)"] = {"n": head["n"], "seconds": float("nan"), "layers": "-",
                                         "dim": 0, **head}
    print(f"phantom {args.size}^2 seed {args.seed}; groups: {args.block} px blocks; outer grouped CV; "
          f"classes {rows['bundled']['confusion_matrix']['labels']}, "
          f"true counts {[round(sum(r)) for r in rows['bundled']['confusion_matrix']['counts']]}")
    print("features | levels | dims | nuclei | features s | balanced accuracy [95% CI] | accuracy | macro F1")
    for name, r in rows.items():
        ci = r.get("balanced_accuracy_ci") or [float("nan")] * 2
        print(f"{name} | {r['layers']} | {r['dim']} | {r['n']} | {r['seconds']:.1f} | "
              f"{r['balanced_accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {r['accuracy']:.3f} | "
              f"{r['macro_f1']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
