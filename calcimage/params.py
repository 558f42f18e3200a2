"""Parameter plumbing shared by every stage.

Each stage owns one frozen ``*Params`` dataclass (``SegmentParams`` in
:mod:`calcimage.segment`, ``CompareParams`` in :mod:`calcimage.compare`, ...) validated
in ``__post_init__``. This module maps plain mappings and TOML files onto them, with
unknown keys as errors, and turns them back into JSON-ready dicts for provenance.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import importlib
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from calcimage.errors import ParameterError

__all__ = [
    "Config",
    "load_config",
    "params_from_mapping",
    "params_to_dict",
    "params_hash",
    "require",
    "require_positive",
    "require_range",
]

P = TypeVar("P")

#: TOML section -> "module:Class" of the stage's parameters.
SECTIONS: dict[str, str] = {
    "segment": "calcimage.segment:SegmentParams",
    "measure": "calcimage.measure:MeasureParams",
    "compare": "calcimage.compare:CompareParams",
}


def require(condition: bool, name: str, value: Any, expected: str) -> None:
    """Raise :class:`ParameterError` unless ``condition`` holds.

    The message names the parameter, the value received and what is expected.
    """
    if not condition:
        raise ParameterError(f"parameter {name}={value!r} is invalid: expected {expected}")


def require_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Check that ``value`` is a finite number > 0 (or >= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    require(ok, name, value, "a finite number " + (">= 0" if allow_zero else "> 0"))


def require_range(name: str, value: float, lo: float, hi: float) -> None:
    """Check that ``lo <= value <= hi``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    require(ok and lo <= value <= hi, name, value, f"a number in [{lo}, {hi}]")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert a TOML/JSON value to the field's annotated type (enums, tuples, floats)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ParameterError as exc:
                errors.append(str(exc))
        raise ParameterError(errors[0] if errors else f"parameter {name}={value!r} is invalid")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in annotation)
            raise ParameterError(
                f"parameter {name}={value!r} is invalid: expected one of {choices}"
            ) from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"parameter {name}={value!r} is invalid: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(name, v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise ParameterError(
                f"parameter {name}={value!r} is invalid: expected a list of {len(args)} values"
            )
        return tuple(_coerce(name, v, a) for v, a in zip(value, args or [Any] * len(value)))
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"parameter {name}={value!r} is invalid: expected a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"parameter {name}={value!r} is invalid: expected an integer")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"parameter {name}={value!r} is invalid: expected true or false")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ParameterError(f"parameter {name}={value!r} is invalid: expected a string")
        return value
    return value


def params_from_mapping(cls: type[P], data: Mapping[str, Any], *, section: str = "") -> P:
    """Build a ``*Params`` dataclass from a mapping; unknown keys are errors.

    Parameters
    ----------
    cls
        A frozen dataclass type.
    data
        Keys are field names; values are plain TOML/JSON values (enums by value,
        tuples as lists).
    section
        Name used in error messages (e.g. ``"segment"``).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    prefix = f"{section}." if section else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        valid = ", ".join(sorted(fields))
        raise ParameterError(
            f"unknown parameter {prefix}{unknown[0]!s}: valid keys in [{section or cls.__name__}] "
            f"are {valid}"
        )
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ParameterError:
        raise
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"invalid [{section or cls.__name__}] parameters: {exc}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return params_to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def params_to_dict(params: Any) -> dict[str, Any]:
    """A JSON-ready dict of a ``*Params`` dataclass (enums by value, tuples as lists)."""
    return {f.name: _jsonable(getattr(params, f.name)) for f in dataclasses.fields(params)}


def params_hash(*params: Any) -> str:
    """Stable short hash of one or more parameter objects (for caching finished work)."""
    blob = json.dumps([params_to_dict(p) for p in params], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _section_class(section: str) -> type:
    module_name, cls_name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


@dataclasses.dataclass(frozen=True)
class Config:
    """Parameters of every stage, as read from a TOML file.

    Sections are ``[segment]``, ``[measure]`` and ``[compare]``; a missing section means
    the defaults.
    """

    segment: Any = None
    measure: Any = None
    compare: Any = None

    def __post_init__(self) -> None:
        for section in SECTIONS:
            if getattr(self, section) is None:
                object.__setattr__(self, section, _section_class(section)())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all sections."""
        return {s: params_to_dict(getattr(self, s)) for s in SECTIONS}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> "Config":
        """Build from a nested mapping ``{"segment": {...}, ...}``; unknown keys are errors."""
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ParameterError(
                f"{source}: unknown section [{unknown[0]}]: valid sections are "
                + ", ".join(f"[{s}]" for s in SECTIONS)
            )
        kwargs = {}
        for section, values in data.items():
            if not isinstance(values, Mapping):
                raise ParameterError(f"{source}: [{section}] must be a table, got {values!r}")
            try:
                kwargs[section] = params_from_mapping(
                    _section_class(section), values, section=section
                )
            except ParameterError as exc:
                raise ParameterError(f"{source}: {exc}") from None
        return cls(**kwargs)


def load_config(path: str | Path) -> Config:
    """Read a TOML parameter file.

    Raises
    ------
    ParameterError
        If the file cannot be read or parsed, or holds an unknown section or key.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParameterError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ParameterError(f"{path}: not a valid TOML file: {exc}") from None
    return Config.from_mapping(data, source=str(path))
