"""The typed options of a segmentation run: one object, shared by CLI and library.

``cerberus segment``'s flags are generated from these fields (see
``cerberus_cli.cli.optgen``), so each default, choice and help text lives here only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cerberus_cli.core.optionspec import (
    backend_opt,
    check_mpp,
    check_nonnegative,
    check_options,
    check_positive,
    device_opt,
    mpp_opt,
    opt,
    precision_opt,
    require,
)
from cerberus_cli.core.run_flags import check_placement, is_slurm_shard, parse_shard_spec
from cerberus_cli.inference.tile_plan import DEFAULT_MARGIN, DEFAULT_TILE, REFERENCE_TILE
from cerberus_cli.outputs.object_formats import FORMAT_NAMES, object_format
from cerberus_cli.outputs.options import WriterOptions
from cerberus_cli.postprocess.options import PostprocessOptions
from cerberus_cli.slides.stain_norm import METHODS as STAIN_METHODS
from cerberus_cli.slides.tissue_options import TissueOptions

#: Largest network input side (tile + 2 * margin), px: a 8192^2 fp32 batch of one
#: already needs ~10 GB of activations in the reference network.
MAX_INPUT_PX = 8192
QUANTIZE = ("none", "int8")


@dataclass(frozen=True)
class SegmentOptions:
    """Options of ``cerberus segment`` (and :func:`cerberus_cli.segment`).

    Geometry is in pixels at the model resolution: ``tile`` is the kept output side,
    ``margin`` the context the network sees around it (input = tile + 2 * margin),
    ``chunk`` the side of a post-processing chunk. ``post`` holds the thresholds and
    sizes of the instance post-processing, ``writer`` the layout of the object files;
    every field that changes results is
    recorded in ``S.run.json`` and in the GeoParquet ``cerberus`` metadata.
    """

    model: str | None = opt(None, "Registry name, cerberus checkpoint or original release "
                            "checkpoint [default: the bundled model].")
    tile: int = opt(DEFAULT_TILE, f"Kept output side, px at the model resolution; {REFERENCE_TILE} "
                    "is the reference geometry (448 in / 144 out).")
    margin: int = opt(DEFAULT_MARGIN, "Context around each kept tile, px at the model resolution.")
    batch_size: int = opt(4, "Tiles per network batch.")
    device: str = device_opt()
    precision: str = precision_opt()
    channels_last: bool = opt(True, "Channels-last memory layout for the network.")
    compile: bool = opt(False, "torch.compile the network.")
    fold_bn: bool = opt(True, "Fold batch-norm layers into the convolutions that feed them before "
                        "inference (the same maps up to float rounding; 1.26x on a CPU).")
    quantize: str = opt("none", "int8: CPU inference with int8 convolutions calibrated on phantom "
                        "tiles (1.5-1.8x faster on a CPU; per-pixel argmax agreement with fp32 >= 99.9 "
                        "percent on the segmentation maps, about 99 on the tissue-type map; seconds to "
                        "prepare); none: float.", choices=QUANTIZE)
    workers: int = opt(2, "Tile reader processes (0: read in the main process).")
    post_workers: int = opt(2, "Post-processing processes (0: in the main process).")
    chunk: int = opt(2048, "Post-processing chunk side, px at the model resolution.")
    backend: str = backend_opt()
    mpp: float | None = mpp_opt()
    mask: str | None = opt(None, "Tissue mask (PNG/TIFF spanning the slide, or GeoJSON polygons in "
                           "level-0 px) instead of automatic detection.")
    format: str = opt("parquet", "Object file format.", choices=FORMAT_NAMES)
    gzip: bool = opt(False, "Gzip the GeoJSON output (--format geojson only).")
    tissue_polygons: bool = opt(False, "Also write tissue-type regions as polygons.")
    save_maps: bool = opt(False, "Keep the probability maps as a multiscale zarr.")
    overlay: bool = opt(True, "Write a QC overlay PNG.")
    overlay_crops: int = opt(0, "Also write this many full-resolution overlay crops (200 um a "
                             "side, S.crop-K.overlay.png) of the regions with most nuclei.")
    overwrite: bool = opt(False, "Redo slides whose outputs exist.")
    fail_fast: bool = opt(False, "Stop at the first failed slide.")
    max_bad_tiles: int = opt(10, "Network tiles that may hold unreadable or implausible pixels "
                             "before a slide fails; fewer make it 'done with damage'.")
    shard: str | None = opt(None, "Process only part of the inputs: I/N (1 <= I <= N; slide S goes "
                            "to shard 1 + sha256(S) mod N, whatever the input order) or 'slurm' "
                            "(this Slurm array task's part).", metavar="I/N|slurm")
    claim_timeout: float = opt(600.0, "Seconds without a heartbeat after which a slide claimed by a "
                               "runner on another host counts as abandoned and is taken over.")
    status: bool = opt(False, "Keep each slide's state (attempts, host, times, errors, counts) in "
                       "OUT/_status/ for 'cerberus status'.")
    devices: str | None = opt(None, "One worker process per device, each loading the model once and "
                              "pulling slides from a shared queue: a list (cuda:0,cuda:1; cpu,cpu for "
                              "CPU workers) or 'all' (every CUDA device).", metavar="LIST|all")
    ray: str | None = opt(None, "Run the slides on a Ray cluster, one actor per GPU (or per --ray-cpus "
                          "CPUs without a GPU): auto (the cluster of RAY_ADDRESS or 'ray start', else "
                          "Ray on this machine), local, HOST:PORT or ray://HOST:PORT. Needs "
                          "pip install \"cerberus-pathology[ray]\".", metavar="[auto|ADDRESS]", cli=False)
    ray_cpus: int = opt(4, "CPUs each Ray actor reserves (its tile readers and post-processing run "
                        "inside it); without a GPU one actor runs per this many CPUs.")
    adapt_bn: int = opt(0, "Re-estimate the network's batch-norm statistics on this many tiles of "
                        "each slide before segmenting it (AdaBN, for a new scanner or stain; 0: off).",
                        metavar="N")
    stain_norm: str = opt("none", "Normalise each slide's stain to the model's reference, fitted on "
                          "tiles of the slide itself.", choices=STAIN_METHODS)
    post: PostprocessOptions = field(default_factory=PostprocessOptions)
    writer: WriterOptions = field(default_factory=WriterOptions)
    tissue: TissueOptions = field(default_factory=TissueOptions)

    def __post_init__(self) -> None:
        check_options(self)
        for name in ("tile", "batch_size", "chunk"):
            check_positive(name, getattr(self, name))
        for name in ("margin", "workers", "post_workers", "max_bad_tiles", "adapt_bn", "overlay_crops"):
            check_nonnegative(name, getattr(self, name))
        check_mpp(self.mpp)
        check_positive("claim_timeout", self.claim_timeout)
        if self.shard is not None and not is_slurm_shard(self.shard):
            parse_shard_spec(self.shard)  # 'slurm' is read from the environment when the run starts
        check_positive("ray_cpus", self.ray_cpus)
        check_placement(self.devices, self.ray, self.device)
        require(self.tile + 2 * self.margin <= MAX_INPUT_PX,
                f"--tile + 2 * --margin = {self.tile + 2 * self.margin} px exceeds the "
                f"{MAX_INPUT_PX} px network input limit")
        require(not self.gzip or object_format(self.format).gzip_suffix is not None,
                "--gzip applies to --format geojson only")
        require(self.overlay or not self.overlay_crops, "--overlay-crops draws on the overlay: "
                "drop --no-overlay or set --overlay-crops 0")
        require(self.quantize == "none" or not self.compile,
                "--compile applies to the float network, not to --quantize int8")
        require(self.writer.nuclei_as == "detection" or self.format == "geojson",
                "--nuclei-as cell applies to --format geojson only (QuPath cells)")

    def to_dict(self) -> dict[str, Any]:
        """Every option as plain JSON-able values (post-processing nested under ``post``)."""
        return asdict(self)
