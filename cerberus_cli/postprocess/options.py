"""Thresholds and sizes of the instance post-processing, in one typed place.

Sizes are in pixels of the model-resolution grid (about 0.5 um/px for the
reference Cerberus model); areas in pixels (px^2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

from cerberus_cli.core.optionspec import check_range, opt, require


@dataclass(frozen=True)
class PostprocessOptions:
    """Parameters of the reference post-processing (Graham et al., 2022).

    Nuclei: ``mask = (inner + boundary) > nuclei_threshold`` eroded once,
    ``markers = inner > nuclei_threshold`` (components smaller than
    ``nuclei_min_marker_px`` removed), watershed on ``-inner`` inside the mask.
    Glands/lumina: ``(inner - boundary) > threshold``, components smaller than
    the minimum removed, each dilated back by the eroded width (elliptical
    kernel of ``*_kernel_px``) and its holes filled; lumina are kept only inside
    glands. ``gland_downsample=2`` runs the gland and lumen steps on a 2x
    block-averaged map (sizes halved) for speed; labels are brought back to the
    full grid, so the rest of the pipeline is unchanged. A model may carry its own
    values of some settings (:meth:`for_model`).
    """

    nuclei_threshold: float = opt(0.5, "Nuclei: probability above which inner+boundary is "
                                  "nucleus and inner is a marker.")
    nuclei_min_marker_px: int = opt(5, "Nuclei: smallest watershed marker kept, px^2 at the "
                                    "model resolution (0.25 um^2 each at 0.5 um/px).")
    nuclei_min_size_px: int = opt(10, "Nuclei: smallest nucleus kept, px^2 at the model resolution.")
    gland_threshold: float = opt(0.55, "Glands: threshold on inner - boundary.")
    gland_min_size_px: int = opt(400, "Glands: smallest gland kept, px^2 at the model resolution.")
    gland_kernel_px: int = opt(11, "Glands: elliptical kernel (px) that dilates each eroded gland "
                               "back to its outline (the training erosion).")
    lumen_threshold: float = opt(0.5, "Lumina: threshold on inner - boundary.")
    lumen_min_size_px: int = opt(30, "Lumina: smallest lumen kept, px^2 at the model resolution.")
    lumen_kernel_px: int = opt(3, "Lumina: elliptical dilation kernel, px.")
    lumen_in_gland_share: float = opt(0.5, "Lumina: minimum share of a lumen's pixels inside a "
                                      "gland (others are dropped).")
    gland_downsample: int = opt(1, "Run the gland and lumen steps on a 2x block-averaged map "
                                "(2) for speed, or at full resolution (1).")
    simplify_px: float = opt(0.0, "Douglas-Peucker tolerance of the output polygons, px at the "
                             "model resolution (0: exact pixel outlines, which score best and, "
                             "stored, take less space than simplified ones; see models/default.md).")
    max_nucleus_px: int = opt(64, "Largest expected nucleus extent, px (sets chunk margins).")
    max_gland_px: int = opt(512, "Largest expected gland extent, px (sets chunk margins).")
    max_lumen_px: int = opt(384, "Largest expected lumen extent, px (sets chunk margins).")
    model_calibration: bool = opt(True, "Use the post-processing settings the model was "
                                  "calibrated with (`cerberus model` lists them) for every "
                                  "setting left at its default.")

    def __post_init__(self) -> None:
        require(self.gland_downsample in (1, 2),
                f"--gland-downsample must be 1 or 2, got {self.gland_downsample}")
        for name in ("nuclei_threshold", "gland_threshold", "lumen_threshold",
                     "lumen_in_gland_share"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("gland_kernel_px", "lumen_kernel_px", "max_nucleus_px", "max_gland_px",
                     "max_lumen_px"):
            require(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1")
        for name in ("nuclei_min_marker_px", "nuclei_min_size_px", "gland_min_size_px",
                     "lumen_min_size_px", "simplify_px"):
            check_range(name, getattr(self, name), 0, float("inf"))

    def for_model(self, calibration: Iterable[tuple[str, float]]) -> PostprocessOptions:
        """The settings to run a model with: with ``model_calibration``, its calibrated
        values (``ModelConfig.postprocess``) in place of every setting still at its
        reference default.

        A setting changed from the default wins over the calibration; the reference
        value itself is forced with ``model_calibration=False``.
        """
        if not self.model_calibration:
            return self
        reference = PostprocessOptions()
        types = {f.name: type(getattr(reference, f.name)) for f in fields(self)}
        changes = {}
        for name, value in calibration:
            if name not in types:
                raise ValueError(f"model post-processing calibration names {name!r}, which is "
                                 "not a post-processing setting")
            if types[name] is int and not float(value).is_integer():
                raise ValueError(f"model post-processing calibration: {name} must be a whole "
                                 f"number, got {value}")
            if getattr(self, name) == getattr(reference, name):
                changes[name] = types[name](value)
        return replace(self, **changes)


def describe_calibration(calibration: Iterable[tuple[str, float]]) -> str:
    """A model's calibration as ``name=value, ...`` (for logs and ``cerberus model``)."""
    return ", ".join(f"{k}={v}" for k, v in calibration)
