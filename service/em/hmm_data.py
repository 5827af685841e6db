"""A hidden Markov model's inputs, checked: sequences turned into arrays, and given parameters validated.

Shared by the solver, the API process (checks before a fit queues) and kept models (imports). Every refusal
is an :class:`InvalidParameterError` naming the field (``sequences.3``, ``init.transitions``) and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from service.em.errors import DegenerateDataError, InvalidParameterError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
Emission = Literal["categorical", "gaussian"]
HmmCovarianceType = Literal["diag", "full"]
EMISSIONS: tuple[Emission, ...] = ("categorical", "gaussian")
HMM_COVARIANCE_TYPES: tuple[HmmCovarianceType, ...] = ("diag", "full")

_SUM_TOLERANCE = 1e-6  # probabilities summing within this of 1 are accepted (and renormalised)


@dataclass(frozen=True)
class Sequences:
    """Every sequence concatenated: symbol indices (categorical, (T,)) or rows (gaussian, (T, d))."""

    values: NDArray[Any]
    lengths: IntArray
    symbols: list[Any] | None = None  # categorical: the symbol of each index (strings or ints)

    @property
    def n_steps(self) -> int:
        return int(self.lengths.sum())

    def split(self, per_step: NDArray[Any]) -> list[NDArray[Any]]:
        """A per-step array cut back into one piece per sequence."""
        return np.split(per_step, np.cumsum(self.lengths)[:-1])


def sequence_array(value: Any, index: int, field: str = "sequences") -> NDArray[Any]:
    """One sequence as an array: strings, integers (symbols), numbers or equal-length rows of numbers."""
    where = f"{field}[{index}]"
    if not isinstance(value, list | np.ndarray):
        raise InvalidParameterError(
            f"{where} must be a list of symbols, numbers or rows of numbers", f"{field}.{index}"
        )
    if len(value) == 0:
        raise InvalidParameterError(f"{where} is empty; every sequence needs at least one step", f"{field}.{index}")
    if isinstance(value, np.ndarray):
        return value
    kinds = {type(v) for v in value}
    if kinds == {str}:
        return np.asarray(value, dtype=str)
    if kinds <= {int, float} or kinds == {list}:
        try:
            array = np.asarray(value, dtype=np.float64 if float in kinds or list in kinds else np.int64)
        except (ValueError, TypeError, OverflowError):
            raise InvalidParameterError(
                f"{where} must hold numbers, or rows of numbers all of the same length (its rows are ragged, or hold "
                "something other than numbers)",
                f"{field}.{index}",
            ) from None
        if array.ndim > 2 or (array.ndim == 2 and array.shape[1] == 0):
            raise InvalidParameterError(f"{where} must be numbers or rows of at least one number", f"{field}.{index}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            step = int(np.argwhere(~np.isfinite(array))[0][0])
            raise InvalidParameterError(f"{where}[{step}] is not a finite number", f"{field}.{index}")
        return array
    names = sorted(_json_type(k) for k in kinds)
    raise InvalidParameterError(
        f"{where} mixes {', '.join(names)}; a sequence holds symbols (all strings or all integers), numbers, or rows "
        "of numbers",
        f"{field}.{index}",
    )


def _json_type(kind: type) -> str:
    return {str: "strings", int: "integers", float: "numbers", list: "lists", bool: "booleans"}.get(
        kind, "nulls" if kind is type(None) else kind.__name__
    )


def encode(raw: list[Any], emission: Emission, symbols: list[Any] | None = None, field: str = "sequences") -> Sequences:
    """Arrays of the raw sequences (each already a :func:`sequence_array` or a list), checked for the emission."""
    arrays = [sequence_array(value, i, field) for i, value in enumerate(raw)]
    if not arrays:
        raise InvalidParameterError(f"{field} is empty; give at least one sequence", field)
    lengths = np.array([len(a) for a in arrays], dtype=np.intp)
    if emission == "gaussian":
        return Sequences(_rows(arrays, field), lengths)
    return _symbols(arrays, lengths, symbols, field)


def _rows(arrays: list[NDArray[Any]], field: str) -> FloatArray:
    dims: list[int] = []
    for i, a in enumerate(arrays):
        if a.dtype.kind not in "iuf":
            raise InvalidParameterError(
                f"{field}[{i}] holds {'strings' if a.dtype.kind == 'U' else a.dtype}; gaussian emissions need numbers "
                "or rows of numbers",
                f"{field}.{i}",
            )
        dims.append(1 if a.ndim == 1 else int(a.shape[1]))
    if len(set(dims)) > 1:
        i = next(i for i, d in enumerate(dims) if d != dims[0])
        raise InvalidParameterError(
            f"{field}[{i}] has rows of {dims[i]} numbers but {field}[0] has {dims[0]}; every step of every sequence "
            "needs the same dimension",
            f"{field}.{i}",
        )
    rows = np.concatenate([a.reshape(len(a), -1).astype(np.float64, copy=False) for a in arrays])
    if not np.all(np.isfinite(rows)):
        raise InvalidParameterError(f"{field} holds a number that is not finite", field)
    return rows


def _symbols(arrays: list[NDArray[Any]], lengths: IntArray, fixed: list[Any] | None, field: str) -> Sequences:
    kinds = [
        "str" if a.dtype.kind == "U" else "int" if a.dtype.kind in "iu" and a.ndim == 1 else "other" for a in arrays
    ]
    for i, kind in enumerate(kinds):
        if kind == "other":
            raise InvalidParameterError(
                f"{field}[{i}] holds numbers or rows; categorical symbols are strings or integers", f"{field}.{i}"
            )
        if kind != kinds[0]:
            raise InvalidParameterError(
                f"{field}[{i}] holds {kind}s but {field}[0] holds {kinds[0]}s; symbols must be all strings or all "
                "integers",
                f"{field}.{i}",
            )
    values = np.concatenate(arrays)
    if fixed is None:
        alphabet, codes = np.unique(values, return_inverse=True)
        return Sequences(codes.astype(np.intp), lengths, alphabet.tolist())
    fixed_array = check_symbols(fixed, "init.emissions.symbols")
    if (fixed_array.dtype.kind == "U") != (kinds[0] == "str"):
        raise InvalidParameterError(
            f"init.emissions.symbols are {'strings' if fixed_array.dtype.kind == 'U' else 'integers'} but the "
            f"sequences hold {kinds[0]}s",
            "init.emissions.symbols",
        )
    order = np.argsort(fixed_array, kind="stable")
    position = np.searchsorted(fixed_array[order], values).clip(0, len(fixed_array) - 1)
    unknown = fixed_array[order][position] != values
    if unknown.any():
        step = int(np.flatnonzero(unknown)[0])
        sequence = int(np.searchsorted(np.cumsum(lengths), step, side="right"))
        at = step - int(lengths[:sequence].sum())
        raise InvalidParameterError(
            f"{field}[{sequence}][{at}] is {values[step].item()!r}, which is not in init.emissions.symbols",
            f"{field}.{sequence}",
        )
    return Sequences(order[position].astype(np.intp), lengths, fixed_array.tolist())


def check_symbols(symbols: list[Any], field: str) -> NDArray[Any]:
    """A list of distinct symbols, all strings or all integers."""
    kinds = {type(s) for s in symbols}
    if not symbols or not (kinds == {str} or kinds == {int}):
        raise InvalidParameterError(f"{field} must be a non-empty list of all strings or all integers", field)
    array = np.asarray(symbols, dtype=str if kinds == {str} else np.int64)
    if len(np.unique(array)) != len(array):
        raise InvalidParameterError(f"{field} names a symbol twice", field)
    return array


# --- parameters ---


def check_probabilities(value: Any, shape: tuple[int, ...], field: str) -> FloatArray:
    """Non-negative probabilities of ``shape`` whose last axis sums to 1 (within 1e-6; renormalised)."""
    array = _float_array(value, field)
    if array.shape != shape:
        raise InvalidParameterError(f"{field} has shape {array.shape}, expected {shape}", field)
    if np.any(array < 0):
        raise InvalidParameterError(f"{field} must be >= 0", field)
    sums = array.sum(axis=-1)
    off = np.abs(sums - 1.0) > _SUM_TOLERANCE
    if np.any(off):
        if array.ndim == 1:
            raise InvalidParameterError(f"{field} must sum to 1, it sums to {float(sums):.6g}", field)
        row = int(np.flatnonzero(off)[0])
        raise InvalidParameterError(f"{field} rows must each sum to 1; row {row} sums to {sums[row]:.6g}", field)
    normalised: FloatArray = array / sums[..., None]
    return normalised


def check_means(value: Any, n_states: int, n_features: int | None, field: str) -> FloatArray:
    means = _float_array(value, field)
    if means.ndim == 1:  # 1-D data: a flat list of K means
        means = means[:, None]
    expected = (n_states, n_features if n_features is not None else means.shape[-1])
    if means.ndim != 2 or means.shape != expected:
        raise InvalidParameterError(f"{field} has shape {means.shape}, expected {expected}", field)
    return means


def check_covariances(
    value: Any, n_states: int, n_features: int, covariance_type: HmmCovarianceType, field: str
) -> FloatArray:
    """Diagonal variances (K, d) > 0 or full covariances (K, d, d), symmetric positive definite."""
    covariances = _float_array(value, field)
    if covariance_type == "diag":
        if covariances.ndim == 1 and n_features == 1:
            covariances = covariances[:, None]
        if covariances.shape != (n_states, n_features):
            raise InvalidParameterError(
                f"{field} has shape {covariances.shape}, expected {(n_states, n_features)} (diag: variances)", field
            )
        if not np.all(covariances > 0):
            raise InvalidParameterError(f"{field} (variances) must all be > 0", field)
        return covariances
    if covariances.ndim == 1 and n_features == 1:
        covariances = covariances[:, None, None]
    if covariances.shape != (n_states, n_features, n_features):
        raise InvalidParameterError(
            f"{field} has shape {covariances.shape}, expected {(n_states, n_features, n_features)} (full)", field
        )
    for k, matrix in enumerate(covariances):
        if not np.allclose(matrix, matrix.T, rtol=1e-8, atol=1e-12 * float(np.abs(matrix).max() or 1.0)):
            raise InvalidParameterError(f"{field}[{k}] is not symmetric", field)
        try:
            np.linalg.cholesky(matrix)
        except np.linalg.LinAlgError:
            raise InvalidParameterError(f"{field}[{k}] is not positive definite", field) from None
    return covariances


def check_enough_steps(n_steps: int, n_states: int) -> None:
    if n_states > n_steps:
        raise DegenerateDataError(
            f"n_states is {n_states} but the sequences have only {n_steps} steps in all; "
            "use at most one state per step",
            "n_states",
        )


def _float_array(value: Any, field: str) -> FloatArray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidParameterError(f"{field} must be a (nested) list of numbers of regular shape", field) from None
    if not np.all(np.isfinite(array)):
        raise InvalidParameterError(f"{field} must hold finite numbers", field)
    return array
