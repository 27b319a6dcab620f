"""The options of ``features``, ``probe`` and ``export-encoder``: one frozen dataclass each,
shared by the CLI (which generates its flags from them) and the library functions."""

from __future__ import annotations

from dataclasses import dataclass

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.optionspec import (
    backend_opt,
    check_mpp,
    check_options,
    check_positive,
    check_range,
    device_opt,
    mpp_opt,
    opt,
    precision_opt,
    require,
    workers_opt,
)
from cerberus_cli.core.vocabulary import INSTANCE_TASKS
from cerberus_cli.model.encoder import level_names
from cerberus_cli.transfer.decoder_levels import OBJECT_DEPTH, OBJECT_STAGES, STAGES, check_level_names
from cerberus_cli.transfer.loaded_encoder import BRIDGE, DEFAULT_DEPTH, NORMALISATIONS
from cerberus_cli.transfer.pooling import POOLINGS

KINDS = ("patches", "grid", "objects")
CLASSIFIERS = ("svm", "logreg", "knn")
DEFAULT_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _names(text: str | tuple[str, ...]) -> tuple[str, ...]:
    parts = text if isinstance(text, tuple) else (text,)
    return tuple(p.strip() for part in parts for p in str(part).split(",") if p.strip())


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in _names(text))
    except ValueError:
        raise InputError(f"--c-grid: expected comma-separated numbers, got {text!r}") from None


@dataclass(frozen=True)
class FeaturesOptions:
    """What ``cerberus features`` extracts, from what, and how."""

    kind: str = opt("patches", "Input kind: patches (a patch table or image folders), grid "
                    "(a grid of patches over the tissue of each slide) or objects (one row per "
                    "segmented object of each slide, pooled under its mask).", choices=KINDS)
    model: str | None = opt(None, "Encoder: registry name, cerberus-cli or original release "
                            "checkpoint, or a plain state dict of a known encoder (e.g. "
                            "torchvision-layout ResNet18/34/50) [default: the bundled model].")
    random_init: int | None = opt(None, "Baseline: the model's architecture with random weights "
                                  "drawn with this seed.", metavar="SEED")
    layers: tuple[str, ...] | None = opt(
        None, "Comma-separated levels, each pooled and concatenated: encoder levels "
        f"({', '.join((*level_names(), BRIDGE))}) or decoder levels HEAD.STAGE of a Cerberus "
        f"model (stage {', '.join(STAGES)}; e.g. nuclei_type.hidden) [default: the encoder's "
        f"{DEFAULT_DEPTH} deepest levels (a ResNet: layer2,layer3,layer4); objects: "
        f"{','.join(OBJECT_STAGES)} (heads the model lacks left out) and the {OBJECT_DEPTH} "
        "deepest].",
        parse=_names, metavar="L1,L2,...")
    pooling: str = opt("avg", "Per-level pooling: avg, or avgmax (mean then max, concatenated).",
                       choices=POOLINGS)
    patch_um: float | None = opt(None, "Patch side in um (patch images are centre-cropped or "
                                 "padded to it; grid and slide-table patches are read at it).")
    patch_px: int | None = opt(None, "Patch side in px at the model's mpp (instead of --patch-um; "
                               "grid and slide-table patches default to 224).")
    mpp: float | None = mpp_opt()
    group_regex: str | None = opt(None, "Image folders: group = first capture group of this regex "
                                  "on the file stem [default: text before the first '_'].")
    allow_group_overlap: bool = opt(False, "Accept a group that appears in two splits.")
    stride_um: float | None = opt(None, "Grid: step between patches in um [default: the patch side].")
    min_tissue: float = opt(0.5, "Grid: least tissue fraction of a kept patch.")
    objects: str | None = opt(None, "Objects: a 'cerberus segment' object file (GeoParquet or "
                              "GeoJSON), or a folder of SLIDE.parquet / SLIDE.geojson files such "
                              "as segment's output, giving the objects of the slides.")
    tasks: tuple[str, ...] = opt(INSTANCE_TASKS, "Objects: comma-separated tasks to keep.",
                                 parse=_names, metavar="T1,T2")
    tile_px: int = opt(512, "Objects: side of the tiles the encoder sees (px at the model mpp), "
                       "plus a margin of --margin on each side.")
    margin: int = opt(64, "Objects: context around each tile, px at the model mpp.")
    batch_size: int = opt(32, "Patches per forward pass.")
    workers: int = workers_opt(2, "Patch reader processes (0: read in the main process).")
    device: str = device_opt()
    precision: str = precision_opt()
    half: bool = opt(False, "Store features as float16 (half the file size).")
    state_dict_mpp: float = opt(0.5, "um/px a plain torchvision state dict expects.")
    state_dict_stem: int = opt(2, "Stem stride of a plain torchvision state dict (torchvision: 2).")
    state_dict_norm: str = opt("imagenet", "Input normalisation of a plain torchvision state dict.",
                               choices=tuple(NORMALISATIONS))
    backend: str = backend_opt()
    overwrite: bool = opt(False, "Replace feature files whose provenance differs.")

    def __post_init__(self) -> None:
        check_options(self)
        if self.layers is not None:
            require(bool(self.layers), "--layers: give at least one level")
            check_level_names(self.layers)
            require(len(set(self.layers)) == len(self.layers), "--layers: a level is named twice")
        require(self.patch_um is None or self.patch_px is None, "give --patch-um or --patch-px, not both")
        if self.patch_um is not None:
            check_positive("patch_um", self.patch_um)
        if self.patch_px is not None:
            check_range("patch_px", self.patch_px, 16, 8192)
        if self.stride_um is not None:
            check_positive("stride_um", self.stride_um)
        check_range("min_tissue", self.min_tissue, 0.0, 1.0)
        check_mpp(self.mpp)
        check_mpp(self.state_dict_mpp, "--state-dict-mpp")
        require(self.state_dict_stem in (1, 2), "--state-dict-stem must be 1 or 2")
        bad = [t for t in self.tasks if t not in INSTANCE_TASKS]
        require(not bad, f"--tasks: unknown task(s) {', '.join(bad)} (choose from {', '.join(INSTANCE_TASKS)})")
        check_positive("batch_size", self.batch_size)
        check_range("tile_px", self.tile_px, 64, 8192)
        check_range("margin", self.margin, 0, 2048)
        require(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        require(self.kind != "objects" or self.objects is not None,
                "--kind objects needs --objects (a 'cerberus segment' GeoParquet or folder)")

    def patch_side(self, model_mpp: float) -> int | None:
        """Patch side in px at the model's mpp, or None (images used whole)."""
        if self.patch_px is not None:
            return self.patch_px
        if self.patch_um is not None:
            return max(16, round(self.patch_um / model_mpp))
        return None


@dataclass(frozen=True)
class ProbeOptions:
    """How ``cerberus probe`` fits and scores a classifier on frozen features."""

    label: str = opt("label", "Column holding the class label.")
    group: str = opt("group", "Column holding the group (patient, slide, image) that folds keep "
                     "together; without it, or when it holds one value on every row, every row "
                     "is its own group (said, with what leaks, in the report's warnings).")
    split: str = opt("split", "Column holding train/val/test; without a test split an outer "
                     "grouped cross-validation gives the test predictions.")
    classifier: str = opt("svm", "Probe: linear SVM, logistic regression, or k nearest "
                          "neighbours; features are standardised first.", choices=CLASSIFIERS)
    knn_baseline: bool = opt(True, "Also report a kNN baseline.")
    c_grid: tuple[float, ...] = opt(DEFAULT_C_GRID, "Comma-separated values of C searched by "
                                    "grouped cross-validation on the training part.",
                                    parse=_floats, metavar="C1,C2,...")
    k_grid: tuple[int, ...] = opt((1, 5, 10, 20), "Comma-separated k searched for kNN.",
                                  parse=lambda t: tuple(int(float(v)) for v in _names(t)),
                                  metavar="K1,K2,...")
    folds: int = opt(5, "Folds of the inner (selection) and outer (no test split) grouped CV.")
    seeds: int = opt(3, "Repeats with seeds 0..N-1 (fold shuffling and classifier); metrics are "
                     "averaged.")
    bootstrap: int = opt(1000, "Bootstrap replicates over test groups for the intervals (0: none).")
    confidence: float = opt(0.95, "Level of the bootstrap intervals.")
    max_iter: int = opt(2000, "Iteration limit of the linear solvers.")
    compare: bool = opt(False, "Feature files are separate configurations (models, layers): probe "
                        "each and rank them, instead of concatenating them into one data set.")
    predict: str | None = opt(None, "Apply the probe saved in this folder (by an earlier "
                              "'cerberus probe -o DIR') to the feature files instead of fitting.",
                              metavar="DIR")
    allow_group_overlap: bool = opt(False, "Accept a group that appears in train and test.")
    overwrite: bool = opt(False, "Replace an existing output folder's reports.")

    def __post_init__(self) -> None:
        check_options(self)
        require(bool(self.c_grid) and all(c > 0 for c in self.c_grid),
                "--c-grid: give positive values of C")
        require(bool(self.k_grid) and all(k >= 1 for k in self.k_grid), "--k-grid: give k >= 1")
        check_range("folds", self.folds, 2, 100)
        check_range("seeds", self.seeds, 1, 1000)
        check_range("bootstrap", self.bootstrap, 0, 100000)
        check_range("confidence", self.confidence, 0.5, 0.999)
        check_positive("max_iter", self.max_iter)


@dataclass(frozen=True)
class ExportOptions:
    """Options of ``cerberus export-encoder``."""

    overwrite: bool = opt(False, "Replace existing encoder and sidecar files.")
