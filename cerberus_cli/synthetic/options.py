"""The typed options of ``cerberus synth tiles`` and ``cerberus synth slide``."""

from __future__ import annotations

from dataclasses import dataclass

from cerberus_cli.core.optionspec import check_nonnegative, check_options, check_positive, opt
from cerberus_cli.core.vocabulary import TASKS
from cerberus_cli.synthetic.params import SCENES


def _tasks(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _size(text: str) -> tuple[int, int]:
    from cerberus_cli.synthetic.slide import parse_size

    return parse_size(text)


@dataclass(frozen=True)
class SynthTilesOptions:
    """A phantom tile dataset: how many tiles per task, their size and seed."""

    count: int = opt(100, "Tiles per task.")
    size: int = opt(448, "Tile side in px (0.5 um/px).")
    seed: int = opt(0, "Random seed (same seed, same bytes).")
    tasks: tuple[str, ...] = opt(TASKS, "Comma-separated subset of nuclei, gland, lumen, tissue.",
                                 parse=_tasks, metavar="TASK,...")
    workers: int = opt(1, "Processes rendering in parallel (output is identical).")
    scene: str = opt("colon", "colon: the colon phantom; varied: stroma-rich tiles with real-sized, "
                     "textured nuclei, purple fibres and stronger stain variation; slide: the "
                     "scene of `synth slide`, to compare tiles with slides (tissue patches "
                     "stay colon).", choices=SCENES)
    overwrite: bool = opt(False, "Replace an existing dataset folder.")

    def __post_init__(self) -> None:
        check_positive("count", self.count)
        check_positive("size", self.size)
        check_nonnegative("workers", self.workers)


@dataclass(frozen=True)
class SynthSlideOptions:
    """A pyramidal phantom slide: size, seed, resolution and container."""

    size: tuple[int, int] = opt((8192, 8192), "WIDTHxHEIGHT in level-0 px [default: 8192x8192].",
                                parse=_size, metavar="WxH")
    seed: int = opt(0, "Random seed (same seed, same bytes).")
    mpp: str = opt("0.5", "Level-0 resolution: 0.5 (20x) or 0.25 (40x).", choices=("0.5", "0.25"))
    format: str | None = opt(None, "Aperio SVS or generic pyramidal TIFF [default: from the suffix].",
                             choices=("svs", "tiff"))
    truth: bool = opt(True, "Write the ground-truth files next to the slide.")
    overwrite: bool = opt(False, "Replace existing outputs.")

    def __post_init__(self) -> None:
        check_options(self)
