"""Typer 0.29 converts every option through a pydantic TypeAdapter, and importing pydantic costs ~60 ms
per command; this converts statecli's plain str/int/float/bool/enum/list values without it.

Only a value whose conversion is unambiguous takes the fast path (a plain decimal for int, a plain
decimal or exponent for float, a choice Typer's own matcher accepts, inside any min/max); everything
else, every error included, goes to Typer's own pydantic conversion, so results and error messages
are Typer's. Installed only on the Typer versions it was checked against (tests/cli/test_fastparams.py
compares both paths value by value); on any other version nothing changes."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

CHECKED = ("0.29.",)  # Typer versions whose coercion this mirrors
_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


class _Slow(Exception):
    """This value needs Typer's own (pydantic) conversion."""


def _leaf(annotation: Any) -> bool:
    return annotation in (str, int, float, bool) or isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def eligible(descriptor: Any) -> bool:
    """A descriptor the fast path handles: a plain leaf or a list of one, no parser, file or path."""
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None or info.clamp:
        return False
    if info.allow_dash or info.path_type is not None or info.resolve_path:
        return False
    ann = descriptor.annotation
    if get_origin(ann) is list:
        args = get_args(ann)
        return len(args) == 1 and _leaf(args[0])
    return get_origin(ann) is None and _leaf(ann)


def convert(annotation: Any, info: Any, value: Any, ctx: Any) -> Any:
    """The value Typer's pydantic conversion gives for `value`, or _Slow when not certain."""
    if get_origin(annotation) is list:
        if not isinstance(value, (list, tuple)):
            raise _Slow
        (item,) = get_args(annotation)
        return [convert(item, info, v, ctx) for v in value]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        from typer._param_types import coerce_cli_choice

        try:
            return coerce_cli_choice(value, choices=list(annotation), case_sensitive=info.case_sensitive, ctx=ctx)
        except Exception as exc:  # noqa: BLE001 - Typer's own path words the error
            raise _Slow from exc
    if annotation is str:
        if type(value) is str:
            return value
        raise _Slow
    if annotation is bool:
        if type(value) is bool:
            return value
        raise _Slow
    if annotation is int:
        if type(value) is int:
            number: Any = value
        elif type(value) is str and _INT.fullmatch(value):
            number = int(value)
        else:
            raise _Slow
    elif annotation is float:
        if type(value) in (int, float):
            number = float(value)
        elif type(value) is str and _FLOAT.fullmatch(value):
            number = float(value)
        else:
            raise _Slow
    else:
        raise _Slow
    if info.min is not None and not number >= info.min or info.max is not None and not number <= info.max:
        raise _Slow  # Typer's message for an out-of-range value
    return number


def install() -> bool:
    """Make Typer build the fast converter for eligible parameters; False when this Typer is not
    one it was checked against (Typer then works as shipped)."""
    try:
        import typer
        from typer import _coercion, core
    except ImportError:
        return False
    version = getattr(typer, "__version__", "")
    if not version.startswith(CHECKED) or getattr(core, "build_runtime_param", None) is not _coercion.build_runtime_param:
        return False
    original = _coercion.build_runtime_param

    @dataclass(frozen=True)
    class FastRuntimeParam(_coercion.RuntimeParam):  # type: ignore[misc,name-defined]
        """Typer's runtime conversion for one parameter, pydantic only when a value needs it."""

        descriptor: Any = None
        slow: list[Any] = field(default_factory=list)  # Typer's own converter, built on first need

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                return convert(self.annotation, self.parameter_info, value, ctx)
            except _Slow:
                if not self.slow:
                    self.slow.append(original(self.descriptor))
                return self.slow[0]._coerce_value(value, param=param, ctx=ctx)

    def build(descriptor: Any) -> Any:
        if eligible(descriptor):
            return FastRuntimeParam(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation,
                                    descriptor=descriptor)
        return original(descriptor)

    core.build_runtime_param = build  # core calls it by this name (imported from _coercion)
    return True


INSTALLED = install()
