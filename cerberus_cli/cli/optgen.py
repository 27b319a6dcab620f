"""Click options generated from a command's options dataclass.

Every field with an :class:`~cerberus_cli.core.optionspec.OptionSpec` becomes one
click option with the field's default, help and choices; a nested options dataclass
(e.g. post-processing inside segment) contributes its own fields. The command body
then calls :func:`build` to get the typed, validated options object back.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click

from cerberus_cli.core.optionspec import OptionSpec, spec_of

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def option_fields(cls: type) -> list[tuple[dataclasses.Field[Any], OptionSpec, Any]]:
    """(field, spec, type) of every CLI option of ``cls``, nested dataclasses flattened."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[dataclasses.Field[Any], OptionSpec, Any]] = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            out.extend(option_fields(kind))
            continue
        spec = spec_of(f)
        if spec is not None and spec.cli:
            out.append((f, spec, kind))
    return out


def flag_name(field: dataclasses.Field[Any], spec: OptionSpec) -> str:
    """The long option name of a field, e.g. ``--batch-size``."""
    return spec.flag or "--" + field.name.replace("_", "-")


def _base(kind: Any) -> tuple[Any, bool]:
    """The non-None member of an optional type, and whether None was allowed."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return kind, False


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _click_option(field: dataclasses.Field[Any], spec: OptionSpec, kind: Any) -> Callable[[F], F]:
    base, _ = _base(kind)
    name = flag_name(field, spec)
    decls = [name] + ([spec.short] if spec.short else [])
    default = _default(field)
    kw: dict[str, Any] = {"help": spec.help, "metavar": spec.metavar}
    if base is bool and spec.parse is None:
        if default:
            decls = [f"{name}/--no-{name[2:]}"] + ([spec.short] if spec.short else [])
            return click.option(*decls, field.name, default=True, show_default=True, **kw)
        return click.option(*decls, field.name, is_flag=True, default=False, **kw)
    if spec.multiple:
        return click.option(*decls, field.name, multiple=True, **kw)
    if spec.parse is not None:
        kw["type"] = str
    elif spec.choices:
        kw["type"] = click.Choice(spec.choices)
    elif typing.get_origin(base) is Literal:
        kw["type"] = click.Choice([str(a) for a in typing.get_args(base)])
    elif base in (int, float, str):
        kw["type"] = base
    shown = default is not None and spec.parse is None and default != ()
    return click.option(*decls, field.name, default=default if shown else None,
                        show_default=shown, **kw)


def click_options(cls: type) -> Callable[[F], F]:
    """Decorate a click command with one option per field of ``cls``."""
    decorators = [_click_option(f, s, k) for f, s, k in option_fields(cls)]

    def apply(func: F) -> F:
        for deco in reversed(decorators):
            func = deco(func)
        return func

    return apply


def build(cls: type[T], values: dict[str, Any], **extra: Any) -> T:
    """The options object of ``cls`` from click's parsed ``values`` (+ ``extra`` fields)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            kwargs[f.name] = build(kind, values)
            continue
        spec = spec_of(f)
        if f.name in extra:
            kwargs[f.name] = extra[f.name]
        elif spec is not None and spec.cli and f.name in values:
            value = values[f.name]
            if spec.parse is not None and value is not None and value != ():
                value = spec.parse(value)
            elif spec.parse is not None or (spec.multiple and value == ()):
                value = _default(f)
            kwargs[f.name] = value
    return cls(**kwargs)
