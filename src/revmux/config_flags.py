"""Typer options derived from a config dataclass, so that a knob is written once (field, default, help).

`@config_flags(TrainConfig, flag=...)` adds one `--flag` per field of the dataclass to a typer command
(help from `field(metadata={"help": ...})`, the default shown from the field), and passes the flags the
user gave as one `overrides` dict: the command applies them over its YAML/recipe values, and the
dataclass checks them. Flags left out stay None and override nothing.

Scalar fields (bool, int, float, str, or one of them | None) get typed options; list and dict fields
get string options ("1,2,4", "2:32,4:64") that the shared loader (`revmux.config.config_from_dict`, via
`coerce`) converts when the dataclass is built. Optional metadata: "default" (how the default reads in
the help, e.g. "the adapters' max_length"), "envvar" (an environment variable the flag also reads) and
"check" (a function run on the flag's value when the command line is parsed, before anything loads: it
returns the value to use or raises a RevmuxError, shown as a usage error of that flag).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from revmux.config import dashed
from revmux.errors import RevmuxError

SCALARS = (bool, int, float, str)


def config_flags(
    cls: type,
    *,
    flag: Callable[[str], str] = dashed,
    exclude: Iterable[str] = (),
    dest: str = "overrides",
    panel: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a typer command taking `dest: dict`: one option per field of `cls` that is not in
    `exclude` and not already a parameter of the command."""
    skip = set(exclude)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func, eval_str=True)
        extra = [
            _parameter(f, hint, flag(f.name), panel)
            for f, hint in _fields(cls)
            if f.name not in skip and f.name not in sig.parameters
        ]
        names = [p.name for p in extra]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name, None) for name in names}
            return func(*args, **kwargs, **{dest: {k: v for k, v in given.items() if v is not None}})

        params = [p for p in sig.parameters.values() if p.name != dest]
        wrapper.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def flag_names(
    cls: type, *, flag: Callable[[str], str] = dashed, exclude: Iterable[str] = ()
) -> dict[str, str]:
    """field name -> flag, for every field `config_flags` turns into an option."""
    skip = set(exclude)
    return {f.name: flag(f.name) for f, _ in _fields(cls) if f.name not in skip}


def _fields(cls: type) -> list[tuple[dataclasses.Field, type]]:
    """(field, option type) for every init field: its scalar type, or str for lists and dicts."""
    hints = typing.get_type_hints(cls)
    return [(f, _option_type(hints[f.name])) for f in dataclasses.fields(cls) if f.init]


def _option_type(hint: Any) -> type:
    """bool/int/float/str for `X` or `X | None`; str for anything else (lists, dicts: spelled as text)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else None
    return hint if hint in SCALARS else str


def _parameter(f: dataclasses.Field, base: type, name: str, panel: str | None) -> inspect.Parameter:
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = None
    shown = f.metadata.get("default", "unset" if default is None else _spelled(default))
    text = f"{f.metadata.get('help', f.name)} (default {shown})"
    decl = f"{name}/--no-{name.removeprefix('--')}" if base is bool else name
    check = f.metadata.get("check")
    option = typer.Option(
        decl,
        help=text,
        show_default=False,
        rich_help_panel=panel,
        envvar=f.metadata.get("envvar"),
        callback=None if check is None else _parse_time(check, name),
    )
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[base | None, option]
    )


def _parse_time(check: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    """A typer callback running `check` on a given value; its RevmuxError becomes a usage error of `name`."""

    def callback(value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except RevmuxError as exc:
            raise typer.BadParameter(str(exc), param_hint=f"'{name}'") from None

    return callback


def _spelled(value: Any) -> Any:
    """A default as its flag would take it: [1, 2] -> "1,2", {2: 33} -> "2:33"."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return value
