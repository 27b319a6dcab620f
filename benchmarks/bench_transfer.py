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
from cerberus_cli.transfer.featurefile import read_features, write_features
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


SIZES: tuple[int, ...] = (25, 50, 100, 250, 1000)
#: Head-only warm-up epochs before full fine-tuning (set by --ft-warmup): on the frozen
#: encoder's cached features, so they cost one feature pass, not an encoder pass each.
FT_WARMUP = 30
#: Learning rate of the head; the encoder's is FT_ENCODER_LR_MULT times it.
FT_LR = 0.01
FT_ENCODER_LR_MULT = 0.1
#: Full fine-tuning epochs per training-set size (after the warm-up).
FT_EPOCHS = {25: 6, 50: 4, 100: 3, 250: 2, 1000: 1}


def curve_data(root: Path, n_signet: int, n_nuclei: int, n_tissue: int) -> dict[str, Path]:
    """The held-out signet task and the other phantom tasks (nucleus type, tissue type)."""
    from cerberus_cli.synthetic.nucleus_patches import write_nucleus_dataset
    from cerberus_cli.synthetic.signet import write_signet_dataset

    signet = write_signet_dataset(root / "signet", count=n_signet, seed=7, size=64)
    nuclei = write_nucleus_dataset(root / "nuclei", count=n_nuclei, seed=3, size=64, per_tile=24)
    rows = []
    for split, seed in (("train", 11), ("val", 12)):
        write_tile_dataset(root / f"tissue_{split}", count=n_tissue, seed=seed, size=128, tasks=["tissue"])
        for img in sorted((root / f"tissue_{split}" / "tissue").glob("*/*.png")):
            rows.append({"path": str(img), "label": img.parent.name, "group": f"{split}-{img.stem}",
                         "split": split})
    tissue = root / "tissue.csv"
    pd.DataFrame(rows).to_csv(tissue, index=False)
    return {"signet": signet, "nuclei": nuclei, "tissue": tissue}


def subset_table(signet: Path, n: int, out: Path, val_groups: int) -> Path:
    """``n`` training rows (the first ``n`` of one seeded permutation, so smaller sets are
    inside larger ones; both classes present), ``val_groups`` val groups, every test row."""
    table = pd.read_csv(signet)
    table["path"] = [str(signet.parent / p) for p in table["path"]]
    train = table[table["split"] == "train"].sample(frac=1.0, random_state=0)
    pick = train.iloc[:n]
    if pick["label"].nunique() < 2:  # pragma: no cover - 25 draws of two balanced classes
        raise RuntimeError(f"{n} training rows hold one class")
    val = table[table["split"] == "val"]
    val = val[val["group"].isin(sorted(val["group"].unique())[:val_groups])]
    pd.concat([pick, val, table[table["split"] == "test"]]).to_csv(out, index=False)
    return out


#: Where the curve is written after every training-set size (set by --curve), so an
#: interrupted run keeps the sizes it finished.
CURVE_OUT: Path | None = None


def save_curve(result: dict, out: Path) -> None:
    """``result`` as JSON to ``out``, and its plot (balanced accuracy over ROC AUC) beside it."""
    import cv2

    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    panels = [plot_curve(result, out.with_suffix(".png"), m) for m in ("balanced_accuracy", "roc_auc")]
    cv2.imwrite(str(out.with_suffix(".png")), np.vstack(panels))


def data_efficiency(root: Path, device: str, steps: int, n_signet: int, val_groups: int) -> dict:
    """Probe (random, bundled, pre-trained encoders) and full fine-tuning (bundled,
    pre-trained) on the signet task with 25..1000 training patches."""
    from cerberus_cli.transfer.pretrain import pretrain
    from cerberus_cli.transfer.tuning_options import PretrainOptions

    if (root / "signet" / "signet.csv").is_file():  # --work of an interrupted run
        data = {"signet": root / "signet" / "signet.csv"}
    else:
        data = curve_data(root, n_signet, 800, 32)
    out: dict = {}
    if (root / "pre" / "checkpoints" / "last.pt").is_file():
        encoders = {"random": (None, 0), "bundled": (None, None),
                    "pretrained": (str(root / "pre" / "checkpoints" / "last.pt"), None)}
        if (root / "pretrain.json").is_file():  # written by the run that pre-trained it
            out["pretrain"] = json.loads((root / "pretrain.json").read_text())
        return _curves(root, data, encoders, device, val_groups, out)
    t = time.perf_counter()
    pre = pretrain(root / "pre", PretrainOptions(
        data=(("nuclei", str(data["nuclei"])), ("tissue", str(data["tissue"]))), arch="resnet18",
        stem_stride=2, patch_px=64, steps=steps, batch_size=32, lr=0.01, head_lr_mult=1.0,
        warmup=0, val_every=steps, log_every=max(1, steps // 10), save_every=steps, device=device))
    out["pretrain"] = {"steps": steps, "wall_s": time.perf_counter() - t,
                              "samples_per_s": pre.samples_per_s, "first_losses": pre.first_losses,
                       "last_losses": pre.last_losses, "val_score": pre.best_score}
    (root / "pretrain.json").write_text(json.dumps(out["pretrain"], default=str))
    print(json.dumps(out, default=str), flush=True)
    encoders = {"random": (None, 0), "bundled": (None, None), "pretrained": (str(pre.last_checkpoint), None)}
    return _curves(root, data, encoders, device, val_groups, out)


#: The curve's metrics: balanced accuracy and ROC AUC (the headline: neither rewards
#: predicting the majority class), then plain accuracy.
CURVE_METRICS = ("balanced_accuracy", "roc_auc", "accuracy")


def _headline(rep: dict) -> dict:
    """Each of :data:`CURVE_METRICS` with its interval (bootstrap over test groups)."""
    out: dict = {}
    for m in CURVE_METRICS:
        out[m], out[f"{m}_ci"] = rep[m], rep.get(f"{m}_ci")
    return out


def majority_baseline(signet: Path) -> dict:
    """Test accuracy of always predicting the training split's most frequent class (its
    balanced accuracy is 0.5 and its ROC AUC 0.5 by construction)."""
    table = pd.read_csv(signet)
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    top = train["label"].value_counts().idxmax()
    return {"class": str(top), "test_accuracy": float((test["label"] == top).mean()),
            "test_counts": {str(k): int(v) for k, v in test["label"].value_counts().items()},
            "balanced_accuracy": 0.5, "roc_auc": 0.5}


def _curves(root: Path, data: dict[str, Path], encoders: dict, device: str, val_groups: int,
            out: dict) -> dict:
    from cerberus_cli.transfer.finetune import finetune
    from cerberus_cli.transfer.tuning_options import FinetuneOptions

    for name, (model, seed) in encoders.items():
        if not (root / f"sig_{name}.parquet").is_file():
            fo = FeaturesOptions(model=model, random_init=seed, workers=0, device=device, patch_px=64)
            features([str(data["signet"])], root / f"sig_{name}.parquet", fo)
    out["majority_baseline"] = majority_baseline(data["signet"])
    out["probe"], out["finetune"] = {}, {}
    for n in SIZES:
        table = subset_table(data["signet"], n, root / f"sig_{n}.csv", val_groups)
        keep = pd.read_csv(table)
        keep = set(keep.loc[keep["split"] != "val", "path"].map(lambda p: Path(p).name))
        for name in encoders:
            cols, X, meta = read_features(root / f"sig_{name}.parquet")
            mask = cols["path"].map(lambda p: Path(p).name in keep).to_numpy()
            sub = write_features(root / f"p_{name}_{n}.parquet", cols[mask], X[mask], meta, overwrite=True)
            rep = probe([str(sub)], root / f"probe_{name}_{n}", ProbeOptions(
                seeds=1, folds=3, bootstrap=500, knn_baseline=False, overwrite=True))
            out["probe"].setdefault(name, {})[n] = _headline(rep)
            print(json.dumps({"probe": name, "n": n, **out["probe"][name][n]}), flush=True)
        for name in ("bundled", "pretrained"):
            model = encoders[name][0]
            t = time.perf_counter()
            rep = finetune(str(table), root / f"ft_{name}_{n}", FinetuneOptions(
                model=model, mode="full", epochs=FT_EPOCHS[n] + FT_WARMUP, warmup_epochs=FT_WARMUP,
                lr_grid=(FT_LR,), encoder_lr_mult=FT_ENCODER_LR_MULT, batch_size=16 if n < 100 else 32,
                patch_px=64, seeds=1, augment=False, bootstrap=500, device=device, overwrite=True))
            wall = time.perf_counter() - t
            epochs = pd.read_csv(root / f"ft_{name}_{n}" / "epochs.csv")
            warm = epochs["epoch"] <= FT_WARMUP
            out["finetune"].setdefault(name, {})[n] = {
                **_headline(rep), "epoch": rep["chosen"][0]["epoch"], "warmup_epochs": FT_WARMUP,
                "val_bacc_best_warmup": float(epochs.loc[warm, "val_balanced_accuracy"].max()),
                "val_bacc_best_full": float(epochs.loc[~warm, "val_balanced_accuracy"].max()),
                "val_bacc_last": float(epochs["val_balanced_accuracy"].iloc[-1]), "wall_s": wall,
                "train_samples_per_s": rep.get("train_samples_per_s")}
            print(json.dumps({"finetune": name, "n": n, **out["finetune"][name][n]}), flush=True)
        if CURVE_OUT is not None:
            save_curve(out, CURVE_OUT)
    return out


def plot_curve(result: dict, path: Path, metric: str = "balanced_accuracy") -> np.ndarray:
    """``metric`` against training-set size (log x), one line per method, 95 % CI bars,
    chance (0.5) dashed; written to ``path`` and returned."""
    import cv2

    w, h, left, right, top, bottom = 760, 440, 60, 230, 30, 45
    img = np.full((h, w, 3), 255, np.uint8)
    lines = [(f"probe {k}", v) for k, v in result["probe"].items()] + \
            [(f"finetune {k}", v) for k, v in result["finetune"].items()]
    colors = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148)]
    pw, ph = w - left - right, h - top - bottom
    lx0, lx1 = np.log10(SIZES[0]) - 0.1, np.log10(SIZES[-1]) + 0.1
    y0, y1 = 0.4, 1.0

    def px(n: float, v: float) -> tuple[int, int]:
        return (int(left + (np.log10(n) - lx0) / (lx1 - lx0) * pw),
                int(top + ph - (min(max(v, y0), y1) - y0) / (y1 - y0) * ph))

    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    for xd in range(left, left + pw, 12):  # chance: balanced accuracy and AUC of a constant
        cv2.line(img, (xd, px(SIZES[0], 0.5)[1]), (min(xd + 6, left + pw), px(SIZES[0], 0.5)[1]), (128, 128, 128), 1)
    for v in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        cv2.putText(img, f"{v:.1f}", (left - 35, px(SIZES[0], v)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for n in SIZES:
        cv2.putText(img, str(n), (px(n, y0)[0] - 10, top + ph + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    title = metric.replace("_", " ").replace("roc auc", "ROC AUC")
    cv2.putText(img, f"signet task: test {title} vs training patches (95% CI, dashed: chance)", (left, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (label, points) in enumerate(lines):
        c = colors[i % len(colors)]
        shift = (i - len(lines) / 2) * 0.012
        pts = []
        for n in SIZES:
            entry = points.get(n) or points.get(str(n))
            if not entry or entry[metric] is None:
                continue
            x = n * 10 ** shift
            pts.append(px(x, entry[metric]))
            ci = entry.get(f"{metric}_ci")
            if ci:
                cv2.line(img, px(x, ci[0]), px(x, ci[1]), c, 1, cv2.LINE_AA)
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, c, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, c, -1, cv2.LINE_AA)
        cv2.line(img, (w - right + 10, top + 15 + 20 * i), (w - right + 30, top + 15 + 20 * i), c, 2)
        cv2.putText(img, label, (w - right + 35, top + 19 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)
    return img


def main() -> None:
    global FT_WARMUP, SIZES
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=90)
    ap.add_argument("--test", type=int, default=54)
    ap.add_argument("--speed-patches", type=int, default=64)
    ap.add_argument("--probe-rows", type=int, default=20000)
    ap.add_argument("--probe-dim", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--curve", metavar="OUT.json", help="Only the data-efficiency curve on the "
                    "signet task: results to OUT.json and the plot beside it (OUT.png).")
    ap.add_argument("--pretrain-steps", type=int, default=60)
    ap.add_argument("--work", help="Keep the curve's files here (default: a temporary folder); "
                    "data, the pre-trained encoder and features found there are reused.")
    ap.add_argument("--signet", type=int, default=1700, help="Signet patches (60/20/20 %% by group).")
    ap.add_argument("--val-groups", type=int, default=5, help="Val groups (8 patches each) used "
                    "by fine-tuning to choose its epoch.")
    ap.add_argument("--ft-warmup", type=int, default=FT_WARMUP, help="Head-only warm-up epochs "
                    "before full fine-tuning.")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="Training-set sizes of "
                    "the curve, comma-separated (a subset of the default).")
    args = ap.parse_args()
    SIZES = tuple(int(v) for v in args.sizes.split(","))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    FT_WARMUP = args.ft_warmup
    if args.curve:
        global CURVE_OUT
        CURVE_OUT = Path(args.curve)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            work = Path(args.work) if args.work else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            result = data_efficiency(work, args.device, args.pretrain_steps, args.signet,
                                     args.val_groups)
            result["wall_s"] = time.perf_counter() - t
        save_curve(result, Path(args.curve))
        return
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
