"""Typed option fields: each command's options are one frozen dataclass whose fields
carry their own help text, choices and CLI spelling.

The CLI generates its click options from these fields (``cerberus_cli.cli.optgen``),
so a default, a choice or a help text lives in exactly one place. Options shared by
several commands (device, backend, mpp, workers, precision) are declared here once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cerberus_cli.core.errors import InputError

#: Slide readers: OpenSlide, tiffslide, a plain image (PNG/JPEG/TIFF), or the first that opens it.
BACKENDS = ("auto", "openslide", "tiffslide", "image")
#: Inference precisions: auto is fp16 autocast on CUDA and fp32 on the CPU.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: Plausible level-0 resolutions, um/px (scanners give 0.1-1; thumbnails reach a few um/px).
MPP_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class OptionSpec:
    """How one option field appears on the command line.

    ``flag`` overrides the long name (default ``--field-name``); ``parse`` turns the
    CLI text (or tuple of texts when ``multiple``) into the field value; ``cli=False``
    keeps a field out of the CLI (library-only).
    """

    help: str
    choices: tuple[str, ...] | None = None
    flag: str | None = None
    short: str | None = None
    metavar: str | None = None
    multiple: bool = False
    parse: Callable[[Any], Any] | None = None
    cli: bool = True


def opt(default: Any = dataclasses.MISSING, help: str = "", *,
        factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    """A dataclass field with its CLI description (see :class:`OptionSpec`)."""
    metadata = {"option": OptionSpec(help=help, **spec)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def spec_of(field: dataclasses.Field[Any]) -> OptionSpec | None:
    """The :class:`OptionSpec` of a field, or None for plain fields."""
    spec = field.metadata.get("option")
    return spec if isinstance(spec, OptionSpec) else None


# --- options shared by several commands --------------------------------------------------

def device_opt() -> Any:
    return opt("auto", "Torch device: auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")


def backend_opt() -> Any:
    return opt("auto", "Slide reader: OpenSlide, tiffslide, plain image, or auto (the first that "
               "opens the file).", choices=BACKENDS)


def mpp_opt() -> Any:
    return opt(None, "Level-0 um/px, for slides that do not record it (or record it wrongly).")


def precision_opt() -> Any:
    return opt("auto", "Network precision; auto: fp16 autocast on CUDA, fp32 on the CPU.",
               choices=PRECISIONS)


def workers_opt(default: int, what: str) -> Any:
    return opt(default, what)


# --- validation helpers: one message shape for every command ----------------------------

def require(condition: bool, message: str) -> None:
    """Raise :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    require(value in choices, f"--{_flag(name)} must be one of {', '.join(choices)}, got {value!r}")


def check_positive(name: str, value: float | int) -> None:
    require(_finite(value) and value > 0, f"--{_flag(name)} must be positive, got {value}")


def check_nonnegative(name: str, value: float | int) -> None:
    require(_finite(value) and value >= 0, f"--{_flag(name)} must be >= 0, got {value}")


def check_range(name: str, value: float, low: float, high: float) -> None:
    require(_finite(value) and low <= value <= high,
            f"--{_flag(name)} must lie in [{low:g}, {high:g}], got {value}")


def check_mpp(value: float | None, what: str = "--mpp") -> None:
    """Reject a resolution outside :data:`MPP_RANGE` (0, negative, NaN included)."""
    if value is None:
        return
    low, high = MPP_RANGE
    require(_finite(value) and low <= value <= high,
            f"{what} must lie in [{low:g}, {high:g}] um/px, got {value}")


def check_options(obj: Any) -> None:
    """Check every field with choices against them (run from ``__post_init__``)."""
    for field in dataclasses.fields(obj):
        spec = spec_of(field)
        value = getattr(obj, field.name)
        if spec is not None and spec.choices and value is not None:
            check_choice(field.name, value, spec.choices)


def _finite(value: float | int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flag(name: str) -> str:
    return name.replace("_", "-")
