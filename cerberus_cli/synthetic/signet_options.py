"""The typed options of ``cerberus synth signet``."""

from __future__ import annotations

from dataclasses import dataclass

from cerberus_cli.core.optionspec import check_positive, check_range, opt


@dataclass(frozen=True)
class SynthSignetOptions:
    """A signet-ring patch task: how many patches, their size and seed."""

    count: int = opt(200, "Patches (half with a signet ring cell in the centre).")
    size: int = opt(64, "Patch side in px (0.5 um/px).")
    seed: int = opt(0, "Random seed (same seed, same bytes).")
    overwrite: bool = opt(False, "Replace an existing dataset folder.")

    def __post_init__(self) -> None:
        check_positive("count", self.count)
        check_range("size", self.size, 32, 1024)
