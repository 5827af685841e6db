"""The point-cloud field: JSON numbers straight into a float64 array, with errors a caller can act on.

Validating a million points one Python float at a time is slow, so the list goes to numpy in one
call; the checks that follow name the first problem (ragged row, text, NaN) by its index.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

_NUMBER = {"type": "number"}
POINTS_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": _NUMBER, "minItems": 1, "title": "1-D points"},
        {
            "type": "array",
            "items": {"type": "array", "items": _NUMBER, "minItems": 1},
            "minItems": 1,
            "title": "rows of d-D points",
        },
    ],
    "description": "a list of numbers (1-D data) or a list of equal-length lists of numbers (rows of d-D data)",
}

_SHAPE_HINT = "points must be a list of numbers (1-D data) or a list of equal-length lists of numbers (d-D rows)"


def to_points(value: Any, allow_missing: bool = False) -> NDArray[np.float64]:
    """A (n,) or (n, d) float64 array from a JSON list, or a ValueError naming what is wrong.

    With ``allow_missing`` a null entry is a missing coordinate (NaN in the array).
    """
    if isinstance(value, np.ndarray):
        return check_finite(value.astype(np.float64, copy=False))
    if not isinstance(value, list) or not value:
        raise ValueError(f"{_SHAPE_HINT}; got {'an empty list' if isinstance(value, list) else type(value).__name__}")
    try:
        raw = np.asarray(value)
    except ValueError:
        raise ValueError(_ragged_message(value)) from None
    if raw.dtype.kind == "O" and allow_missing and _numbers_or_nulls(value):
        raw = np.array(value, dtype=np.float64)  # null -> NaN
        if raw.ndim not in (1, 2):
            raise ValueError(f"{_SHAPE_HINT}; got {raw.ndim} levels of nesting")
        return raw
    if raw.dtype.kind not in "iuf":  # text, booleans, null, objects, or integers beyond 64 bits
        raise ValueError(f"{_SHAPE_HINT}; {_first_non_number(value, allow_missing)}")
    if raw.ndim not in (1, 2):
        raise ValueError(f"{_SHAPE_HINT}; got {raw.ndim} levels of nesting")
    if raw.ndim == 2 and raw.shape[1] == 0:
        raise ValueError("rows of points must hold at least one number")
    return check_finite(raw.astype(np.float64, copy=False))


def check_finite(X: NDArray[np.float64]) -> NDArray[np.float64]:
    if not np.all(np.isfinite(X)):
        where = np.argwhere(~np.isfinite(X))[0].tolist()
        raise ValueError(f"points{''.join(f'[{i}]' for i in where)} is not a finite number")
    return X


def _ragged_message(value: list[Any]) -> str:
    lengths = [len(row) if isinstance(row, list) else None for row in value]
    first = lengths[0]
    for i, length in enumerate(lengths):
        if length != first:
            if first is None or length is None:
                return f"{_SHAPE_HINT}; points[0] and points[{i}] mix numbers and lists"
            return (
                f"all rows of points must have the same length: points[0] has {first} values, points[{i}] has {length}"
            )
    return _SHAPE_HINT  # nested deeper than rows of numbers


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _numbers_or_nulls(value: list[Any]) -> bool:
    """Rows (d-D data: a null in 1-D data would be a point with nothing observed) of equal length, every leaf a
    number (within 64 bits) or null."""
    if not all(isinstance(item, list) for item in value):
        return False
    rows = [item if isinstance(item, list) else [item] for item in value]
    leaves_ok = all(
        leaf is None or (_is_number(leaf) and not (isinstance(leaf, int) and abs(leaf) >= 2**63))
        for row in rows
        for leaf in row
    )
    return leaves_ok and len({len(row) for row in rows}) == 1


def _first_non_number(value: list[Any], allow_missing: bool = False) -> str:
    for i, item in enumerate(value):
        for j, leaf in enumerate(item if isinstance(item, list) else [item]):
            if leaf is None and allow_missing and isinstance(item, list):
                continue
            if not _is_number(leaf):
                where = f"points[{i}][{j}]" if isinstance(item, list) else f"points[{i}]"
                shown = "null" if leaf is None else repr(leaf)[:40]
                return f"{where} is {shown}, not a number"
            if isinstance(leaf, int) and abs(leaf) >= 2**63:
                return f"points[{i}] is an integer too large to fit"
    return "found values that are not numbers"


Points = Annotated[
    NDArray[np.float64],
    PlainValidator(to_points),
    PlainSerializer(lambda X: X.tolist(), return_type=list),
    WithJsonSchema(POINTS_JSON_SCHEMA),
]

_NUMBER_OR_NULL = {"anyOf": [{"type": "number"}, {"type": "null"}]}
POINTS_WITH_MISSING_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": _NUMBER, "minItems": 1, "title": "1-D points"},
        {
            "type": "array",
            "items": {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 1},
            "minItems": 1,
            "title": "rows of d-D points (null: a missing coordinate)",
        },
    ],
    "description": "a list of numbers (1-D data) or a list of equal-length lists of numbers (rows of d-D data); "
    "in rows, null marks a missing coordinate (the fit uses the observed ones: true EM, no imputation)",
}

# Points of a Gaussian fit: rows may miss coordinates (null).
PointsWithMissing = Annotated[
    NDArray[np.float64],
    PlainValidator(lambda value: to_points(value, allow_missing=True)),
    PlainSerializer(lambda X: np.where(np.isnan(X), None, X).tolist(), return_type=list),
    WithJsonSchema(POINTS_WITH_MISSING_JSON_SCHEMA),
]
