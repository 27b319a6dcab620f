"""Options of tissue detection: one frozen dataclass whose fields become CLI flags.

Commands that find tissue (``segment``, ``info``) nest :class:`TissueOptions` in
their own options; every field is prefixed ``tissue_`` so the flags
(``--tissue-method``, ``--tissue-threshold``, ...) cannot clash with theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from cerberus_cli.core.optionspec import check_options, check_positive, opt, require

#: Detection methods: stain optical density above the glass (default), the older Otsu
#: cut of saturation, or no detection (the whole slide is processed).
TISSUE_METHODS = ("od", "otsu", "all")
#: Resolutions the thumbnail may be read at, um/px.
TISSUE_MPP_RANGE = (1.0, 32.0)


@dataclass(frozen=True)
class TissueOptions:
    """How tissue is found on a slide's thumbnail (see docs/tissue.md)."""

    tissue_method: str = opt(
        "od", "Tissue detection: od (stain optical density above the glass; finds pale "
        "tissue, fat and mucin, leaves out pen, dust, bubbles and glass edges), otsu "
        "(Otsu cut of saturation; misses pale tissue) or all (no detection: process the "
        "whole slide).", choices=TISSUE_METHODS)
    tissue_threshold: float | None = opt(
        None, "Tissue cut: for od the stain optical density above the glass (log10, "
        "typically 0.01-0.05; lower finds fainter tissue), for otsu the saturation "
        "(0-1). Default: chosen from the slide's own glass.", metavar="VALUE")
    tissue_mpp: float = opt(
        4.0, "Resolution (um/px) of the thumbnail tissue is detected on; coarser is faster "
        "but loses thin strands.", metavar="UM_PER_PX")

    def __post_init__(self) -> None:
        check_options(self)
        if self.tissue_threshold is not None:
            require(isinstance(self.tissue_threshold, (int, float))
                    and 0 < self.tissue_threshold < 1,
                    f"--tissue-threshold must lie in (0, 1), got {self.tissue_threshold}")
        check_positive("tissue_mpp", self.tissue_mpp)
        low, high = TISSUE_MPP_RANGE
        require(low <= self.tissue_mpp <= high,
                f"--tissue-mpp must lie in [{low:g}, {high:g}] um/px, got {self.tissue_mpp}")
