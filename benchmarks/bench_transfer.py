"""Transfer learning: phantom tissue probe (bundled model vs a random encoder of the same
architecture), feature extraction patches/s (reference and light encoders), probe time.

Uses the library functions behind ``cerberus features`` and ``cerberus probe`` on phantom
tissue patches (train seed 1, held-out test seed 2), then times extraction on
``--speed-patches`` 224 px patches per encoder and one probe fit on random
``--probe-rows`` x ``--probe-dim`` features (one seed, one C, no bootstrap: the cost of
a single selection-free fit; a full protocol multiplies it by seeds x (folds x C + 1)).

    nice -n 10 .venv/bin/python benchmarks/bench_transfer.py [--train 90] [--test 54] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cerberus_cli.model.checkpoint import save_checkpoint
from cerberus_cli.model.config import light_config, reference_config
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.synthetic.dataset import write_tile_dataset
from cerberus_cli.transfer.extract import features
from cerberus_cli.transfer.featurefile import write_features
from cerberus_cli.transfer.options import FeaturesOptions, ProbeOptions
from cerberus_cli.transfer.probe import probe


def phantom_table(root: Path, n_train: int, n_test: int) -> Path:
    rows = []
    for split, seed, count in (("train", 1, n_train), ("test", 2, n_test)):
        write_tile_dataset(root / split, count=count, seed=seed, tasks=["tissue"])
        for img in sorted((root / split / "tissue").glob("*/*.png")):
            rows.append({"path": str(img), "label": img.parent.name,
                         "group": f"{split}-{img.stem}", "split": split})
    path = root / "patches.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def tissue_probe(root: Path, table: Path, device: str) -> dict[str, dict[str, float]]:
    out = {}
    popts = ProbeOptions(seeds=3, folds=3, bootstrap=200)
    for name, seed in (("bundled", None), ("random", 0)):
        fo = FeaturesOptions(random_init=seed, workers=0, device=device)
        feats = root / f"{name}.parquet"
        t = time.perf_counter()
        features([str(table)], feats, fo)
        t_feat = time.perf_counter() - t
        t = time.perf_counter()
        rep = probe([str(feats)], root / f"probe_{name}", popts)
        out[name] = {"balanced_accuracy": rep["balanced_accuracy"],
                     "balanced_accuracy_ci": rep["balanced_accuracy_ci"],
                     "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"],
                     "roc_auc": rep["roc_auc"],
                     "knn_balanced_accuracy": rep["baselines"]["knn"]["balanced_accuracy"],
                     "features_s": t_feat, "probe_s": time.perf_counter() - t}
    return out


def extraction_speed(root: Path, n: int, device: str) -> dict[str, float]:
    imgs = root / "speed"
    (imgs / "X").mkdir(parents=True)
    import cv2

    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(imgs / "X" / f"p{i}.png"), rng.integers(0, 255, (224, 224, 3), np.uint8))
    out = {}
    for cfg in (light_config(), reference_config()):
        torch.manual_seed(0)
        ckpt = save_checkpoint(CerberusNet(cfg).eval(), root / f"{cfg.name}.pt")
        fo = FeaturesOptions(model=str(ckpt), workers=0, device=device, batch_size=32)
        features([str(imgs)], root / f"{cfg.name}.parquet", fo)  # warm-up (and page cache)
        t = time.perf_counter()
        features([str(imgs)], root / f"{cfg.name}.parquet", FeaturesOptions(
            model=str(ckpt), workers=0, device=device, batch_size=32, overwrite=True,
            layers=("layer2", "layer3")))
        out[cfg.name] = n / (time.perf_counter() - t)
    return out


def probe_speed(root: Path, rows: int, dim: int) -> float:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, rows)
    X = rng.normal(size=(rows, dim)).astype(np.float32) + labels[:, None] * 0.05
    cols = pd.DataFrame({"label": labels.astype(str), "group": (np.arange(rows) // 10).astype(str),
                         "split": np.where((np.arange(rows) // 10) % 5 == 0, "test", "train")})
    f = write_features(root / "big.parquet", cols, X, {"kind": "patches"})
    t = time.perf_counter()
    probe([str(f)], root / "probe_big", ProbeOptions(seeds=1, c_grid=(1e-3,), bootstrap=0,
                                                      knn_baseline=False))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=90)
    ap.add_argument("--test", type=int, default=54)
    ap.add_argument("--speed-patches", type=int, default=64)
    ap.add_argument("--probe-rows", type=int, default=20000)
    ap.add_argument("--probe-dim", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table = phantom_table(root, args.train, args.test)
        # Each result is printed as soon as it is known.
        print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, "
                                     f"{torch.get_num_threads()} torch threads, device {args.device}"}),
              flush=True)
        print(json.dumps({"tissue_probe": tissue_probe(root, table, args.device)}, indent=2), flush=True)
        print(json.dumps({"patches_per_s_224px_layer2_3":
                          extraction_speed(root, args.speed_patches, args.device)}), flush=True)
        print(json.dumps({f"probe_s_{args.probe_rows}x{args.probe_dim}_one_fit":
                          probe_speed(root, args.probe_rows, args.probe_dim)}), flush=True)


if __name__ == "__main__":
    main()
