"""JSON as the service sends it, into the dataclasses of ``em_client.models``, driven by their annotations.

Tolerant by default, so that a newer server does not break an older client: fields the client does not know are
dropped, enum values it does not know are kept as strings, and a result of a kind it does not know stays a dict.
``strict=True`` refuses unknown fields instead (the client's tests use it against the live server).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from datetime import datetime
from typing import Any, Literal, TypeVar, Union, cast

from em_client.errors import UnexpectedResponse

T = TypeVar("T")


def decode(target: type[T], value: Any, *, strict: bool = False) -> T:
    """``value`` (parsed JSON) as a ``target``: a dataclass of em_client.models, or a type expression over them."""
    return cast(T, _decode(target, value, strict, "$"))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(target: Any, value: Any, strict: bool, where: str) -> Any:
    if target is Any:
        return value
    if dataclasses.is_dataclass(target) and isinstance(target, type):
        return _decode_dataclass(target, value, strict, where)
    origin = typing.get_origin(target)
    if origin in (Union, types.UnionType):
        return _decode_union(typing.get_args(target), value, strict, where)
    if origin is list:
        (item,) = typing.get_args(target)
        _expect(isinstance(value, list), "a list", value, where)
        if not _needs_conversion(item):
            return value  # numbers or strings as parsed: a million responsibilities are not walked again
        return [_decode(item, entry, strict, f"{where}[{i}]") for i, entry in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(target)
        _expect(isinstance(value, dict), "an object", value, where)
        if not _needs_conversion(item):
            return value
        return {key: _decode(item, entry, strict, f"{where}.{key}") for key, entry in value.items()}
    if origin is Literal:
        _expect(isinstance(value, str | int | bool), "a constant", value, where)
        return value
    if target is datetime:
        _expect(isinstance(value, str), "a date-time string", value, where)
        return datetime.fromisoformat(value)
    if target is float:
        # JSON writes 2.0 as 2: a float field holds a float either way.
        _expect(isinstance(value, int | float) and not isinstance(value, bool), "a number", value, where)
        return float(value)
    if target is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), "an integer", value, where)
        return value
    if target is bool or target is str:
        _expect(isinstance(value, target), target.__name__, value, where)
        return value
    if target is type(None):
        _expect(value is None, "null", value, where)
        return None
    raise TypeError(f"no decoding for {target!r}")


def _decode_dataclass(cls: type, value: Any, strict: bool, where: str) -> Any:
    _expect(isinstance(value, dict), f"a {cls.__name__} object", value, where)
    hints = _hints(cls)
    known = {field.name: field for field in dataclasses.fields(cls)}
    if strict and (unknown := set(value) - set(known)):
        raise UnexpectedResponse(f"{where}: fields this client does not know in {cls.__name__}: {sorted(unknown)}")
    values = {}
    for name, field in known.items():
        if name in value:
            values[name] = _decode(hints[name], value[name], strict, f"{where}.{name}")
        elif field.default is dataclasses.MISSING:
            raise UnexpectedResponse(f"{where}: {cls.__name__} without its required field {name!r}")
    return cls(**values)


def _decode_union(options: tuple[Any, ...], value: Any, strict: bool, where: str) -> Any:
    if value is None and type(None) in options:
        return None
    options = tuple(option for option in options if option is not type(None))
    if len(options) == 1:
        return _decode(options[0], value, strict, where)
    classes = [option for option in options if dataclasses.is_dataclass(option) and isinstance(option, type)]
    if classes and isinstance(value, dict):
        # A discriminated union (a job's result): the member whose constant fields match the value's.
        for cls in classes:
            if _constants_match(cls, value):
                return _decode(cls, value, strict, where)
        if dict[str, Any] in options and not strict:
            return value  # a kind this client does not know yet
        raise UnexpectedResponse(f"{where}: an object that is none of {[c.__name__ for c in classes]}")
    if not any(_needs_conversion(option) for option in options):
        # Alternatives of plain JSON shapes (a list of numbers, or of rows): the value is already one of them.
        return value
    for option in options:
        try:
            return _decode(option, value, strict, where)
        except UnexpectedResponse:
            continue
    raise UnexpectedResponse(f"{where}: {value!r:.80} matches none of {options}")


def _constants_match(cls: type, value: dict[str, Any]) -> bool:
    constants = {
        name: typing.get_args(hint)
        for name, hint in _hints(cls).items()
        if typing.get_origin(hint) is Literal and len(typing.get_args(hint)) == 1
    }
    return bool(constants) and all(
        value.get(name, _defaults(cls).get(name)) in allowed for name, allowed in constants.items()
    )


@functools.cache
def _defaults(cls: type) -> dict[str, Any]:
    return {field.name: field.default for field in dataclasses.fields(cls)}


@functools.cache
def _needs_conversion(target: Any) -> bool:
    """Whether decoding ``target`` does more than check a JSON value (it builds dataclasses or dates)."""
    if dataclasses.is_dataclass(target) or target is datetime:
        return True
    return any(_needs_conversion(arg) for arg in typing.get_args(target) if arg is not Ellipsis)


def _expect(ok: bool, what: str, value: Any, where: str) -> None:
    if not ok:
        raise UnexpectedResponse(f"{where}: expected {what}, got {value!r:.80}")
