"""Find a slide's pixel size (micrometres per pixel) in its metadata.

Sources, most trusted first:

1. the reader's own parsed value (``openslide.mpp-x/y``, ``tiffslide.mpp-x/y``),
2. the Aperio ImageDescription (``aperio.MPP``),
3. TIFF resolution tags (``tiff.XResolution`` / ``tiff.YResolution`` with
   ``tiff.ResolutionUnit`` centimetre or inch), PNG ``pHYs``, JPEG JFIF density.

Values outside :data:`PLAUSIBLE_MPP` are screen or print defaults (72, 96, 300 dpi
are 353, 265 and 85 um/px), not microscope resolutions, and are ignored. The
objective power alone is not a resolution: it is used only as a fallback, as
``10 / power`` um/px (40x -> 0.25), and always with a warning that names the
assumption.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from cerberus_cli.core.errors import InputError

log = logging.getLogger(__name__)

#: Range of pixel sizes (um/px) accepted from metadata.
PLAUSIBLE_MPP = (0.02, 50.0)

_UNIT_UM = {"centimeter": 1e4, "cm": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0}


def _float(value: object) -> float | None:
    try:
        f = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _plausible(value: float | None) -> float | None:
    if value is None:
        return None
    lo, hi = PLAUSIBLE_MPP
    return value if lo <= value <= hi else None


def _pair(props: Mapping[str, str], kx: str, ky: str) -> float | None:
    x, y = _float(props.get(kx)), _float(props.get(ky))
    if x is None:
        return None
    return _plausible((x + y) / 2 if y is not None else x)


def _from_resolution_tags(props: Mapping[str, str]) -> float | None:
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    scale = _UNIT_UM.get(unit)
    if scale is None:
        return None
    rx, ry = _float(props.get("tiff.XResolution")), _float(props.get("tiff.YResolution"))
    if rx is None:
        return None
    mx = scale / rx
    my = scale / ry if ry is not None else mx
    return _plausible((mx + my) / 2)


def mpp_from_properties(props: Mapping[str, str]) -> tuple[float | None, str | None]:
    """Level-0 um/px from slide properties, and the property it came from."""
    for kx, ky in (
        ("openslide.mpp-x", "openslide.mpp-y"),
        ("tiffslide.mpp-x", "tiffslide.mpp-y"),
        ("aperio.MPP", "aperio.MPP"),
    ):
        v = _pair(props, kx, ky)
        if v is not None:
            return v, kx
    v = _from_resolution_tags(props)
    if v is not None:
        return v, "tiff.XResolution"
    return None, None


def objective_power_from_properties(props: Mapping[str, str]) -> float | None:
    """Scanning objective power (e.g. 40.0) from slide properties, if recorded."""
    for key in ("openslide.objective-power", "tiffslide.objective-power", "aperio.AppMag"):
        v = _float(props.get(key))
        if v is not None:
            return v
    return None


def resolve_mpp(
    path: object, props: Mapping[str, str], override: float | None = None
) -> tuple[float, str]:
    """The level-0 um/px to use for a slide, and where it came from.

    ``override`` (the user's ``--mpp``) wins. Without any resolution in the
    metadata, the objective power is used with a warning; without that either,
    :class:`InputError` tells the user to pass ``--mpp``.
    """
    if override is not None:
        if not (_float(override) and math.isfinite(override)):
            raise InputError(f"{path}: --mpp must be a positive number, got {override}")
        return float(override), "--mpp"
    mpp, source = mpp_from_properties(props)
    if mpp is not None:
        return mpp, str(source)
    power = objective_power_from_properties(props)
    if power is not None:
        mpp = 10.0 / power
        log.warning(
            "%s: no pixel size in the metadata; assuming %.4g um/px from the %gx objective "
            "power (10 um / power). Pass --mpp to set it.", path, mpp, power
        )
        return mpp, f"objective power {power:g}x (assumed 10/power)"
    raise InputError(
        f"{path}: no pixel size (mpp) in the file's metadata; pass --mpp "
        "(micrometres per pixel at full resolution, e.g. --mpp 0.25 for a 40x scan)"
    )
