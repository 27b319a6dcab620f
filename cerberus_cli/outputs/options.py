"""How the object writers lay out their files: one frozen options object.

Nested into the segment options, each field becomes a CLI flag of ``cerberus segment``
(``--geojson-decimals``, ``--lumina``, ``--nuclei-geometry``, ``--nuclei-as``,
``--cell-expansion-um``, ``--row-group-size``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cerberus_cli.core.optionspec import check_options, opt, require

#: Where lumina go in QuPath GeoJSON: inside their gland's ``childObjects``, or top level.
LUMINA_LAYOUTS = ("nested", "flat")
#: What a nucleus is in the object file: its outline, or only its centroid.
NUCLEUS_GEOMETRIES = ("polygon", "point")
#: What a nucleus is in QuPath GeoJSON: a detection, or a cell (grown boundary + nucleus).
NUCLEUS_OBJECTS = ("detection", "cell")


@dataclass(frozen=True)
class WriterOptions:
    """Layout of the object files (GeoParquet and QuPath GeoJSON).

    ``geojson_decimals``: decimal places of GeoJSON coordinates in level-0 px (QuPath
    itself keeps 0.01 px, so 2 loses nothing it would keep); -1 writes full doubles.
    ``lumina``: ``nested`` puts each lumen in its gland's ``childObjects`` (QuPath's
    hierarchy), ``flat`` writes lumina as top-level detections with the gland's id in
    ``metadata.parent_uuid``. ``nuclei_geometry``: ``point`` writes each nucleus as
    its centroid only (measurements kept), for very large slides. ``row_group_size``:
    GeoParquet rows per row group; row groups hold one task over a compact region.
    ``nuclei_as``: ``cell`` writes each nucleus in QuPath GeoJSON as a cell object whose
    boundary is the nucleus grown by ``cell_expansion_um``, cut half way to its
    neighbours (QuPath's cell expansion), with the nucleus as ``nucleusGeometry``.
    """

    geojson_decimals: int = opt(
        2, "GeoJSON coordinate decimals (level-0 px). 2 is QuPath's own precision; -1 writes "
        "full doubles (about 40% larger files).")
    lumina: Literal["nested", "flat"] = opt(
        "nested", "GeoJSON lumina: nested inside their gland (QuPath childObjects) or flat "
        "top-level detections linked by metadata parent_uuid.", choices=LUMINA_LAYOUTS)
    nuclei_geometry: Literal["polygon", "point"] = opt(
        "polygon", "Nucleus geometry in the object file: the outline, or the centroid only "
        "(point detections; far smaller files for huge slides, measurements kept).",
        choices=NUCLEUS_GEOMETRIES)
    nuclei_as: Literal["detection", "cell"] = opt(
        "detection", "GeoJSON nuclei as QuPath detections, or as QuPath cells: the nucleus "
        "grown by --cell-expansion-um (limited half way to neighbouring nuclei) with the "
        "nucleus inside (--format geojson only).", choices=NUCLEUS_OBJECTS)
    cell_expansion_um: float = opt(
        5.0, "Cell boundary distance from the nucleus, um (with --nuclei-as cell).")
    row_group_size: int = opt(
        20_000, "GeoParquet rows per row group. Row groups hold one task over a compact "
        "region (Hilbert order), so bounding-box reads skip the rest of the slide.")

    def __post_init__(self) -> None:
        check_options(self)
        require(isinstance(self.geojson_decimals, int) and -1 <= self.geojson_decimals <= 12,
                f"--geojson-decimals must lie in [-1, 12], got {self.geojson_decimals}")
        require(isinstance(self.row_group_size, int) and self.row_group_size >= 1,
                f"--row-group-size must be >= 1, got {self.row_group_size}")
        require(isinstance(self.cell_expansion_um, (int, float))
                and math.isfinite(self.cell_expansion_um) and 0 <= self.cell_expansion_um <= 100,
                f"--cell-expansion-um must lie in [0, 100], got {self.cell_expansion_um}")
        require(not (self.nuclei_as == "cell" and self.nuclei_geometry == "point"),
                "--nuclei-as cell needs nucleus outlines, not --nuclei-geometry point")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
