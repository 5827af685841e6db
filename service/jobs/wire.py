"""A task dataclass as plain tuples and bytes, for the small-fit pipe (see :class:`~service.jobs.protocol.SmallFit`).

Pickle spends ~4 µs on each dataclass and ~10 µs on each numpy array, however small (the array's reduce runs
in Python and pickles its dtype); a Do & Batzoglou task (the task, its options, three 5-element arrays) took
~30 µs to pickle on the event loop, as long as the fit's whole E-step. As tuples of plain values and raw
bytes the same task packs in a few µs. Anything else (lists, strings, nested containers, array subclasses such
as a dataset's memory map) is left to pickle as it is: packing changes the cost, never the value.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# A packed dataclass: its class, its fields' values in order (None where packed), and the packed ones as
# (field index, packed dataclass or None, array as (bytes, dtype, shape) or None).
Packed = tuple[type, tuple[Any, ...], tuple[tuple[int, Any, Any], ...]]

_RAW_KINDS = frozenset("biuf")  # numeric dtypes: their bytes are the whole value
_PLAIN = frozenset({int, float, str, bool, bytes, type(None)})  # never dataclasses: no need to look
_init_fields: dict[type, tuple[str, ...] | None] = {}


def _fields_of(cls: type) -> tuple[str, ...] | None:
    """The fields ``cls(*values)`` takes in order; None when ``cls`` is not a dataclass rebuilt that way."""
    try:
        return _init_fields[cls]
    except KeyError:
        fields = dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else None
        names = None if fields is None or any(not f.init for f in fields) else tuple(f.name for f in fields)
        _init_fields[cls] = names
        return names


def packable(value: Any) -> bool:
    """Whether :func:`pack` takes ``value``: a dataclass instance whose class its fields rebuild."""
    return not isinstance(value, type) and _fields_of(type(value)) is not None


def pack(task: Any) -> Packed:
    """``task`` (a :func:`packable` dataclass instance) packed for pickling (see :func:`unpack`)."""
    cls = type(task)
    names = _fields_of(cls)
    assert names is not None
    values = [getattr(task, name) for name in names]
    packed: list[tuple[int, Any, Any]] = []
    for index, value in enumerate(values):
        kind = type(value)
        if kind is np.ndarray:
            if value.dtype.kind in _RAW_KINDS:
                packed.append((index, None, (value.tobytes(), value.dtype.str, value.shape)))
                values[index] = None
        elif kind not in _PLAIN and _fields_of(kind) is not None:
            packed.append((index, pack(value), None))
            values[index] = None
    return (cls, tuple(values), tuple(packed))


def unpack(packed: Packed) -> Any:
    """What :func:`pack` was given: an equal dataclass, its arrays fresh, writable and C-ordered."""
    cls, plain, special = packed
    values = list(plain)
    for index, dataclass_value, array in special:
        if dataclass_value is not None:
            values[index] = unpack(dataclass_value)
        else:
            data, dtype, shape = array
            values[index] = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    return cls(*values)
