"""Checks of a Gaussian mixture's inputs that need no model: cheap enough to run before a fit is queued.

The API process runs them so a request that cannot be fitted is a 422 at once, without building the
model (centred copy, design matrices) it would build again in the worker. Each names the field at fault.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from service.em.blocks import all_finite, column_extremes, row_blocks
from service.em.coins import check_weights
from service.em.errors import DegenerateDataError, InvalidParameterError

FloatArray = NDArray[np.float64]
CovarianceType = Literal["full", "diag", "spherical", "tied"]
InitMethod = Literal["kmeans", "kmeans++", "random_from_data", "random"]
WorkingDtype = Literal["float64", "float32"]
COVARIANCE_TYPES: tuple[CovarianceType, ...] = ("full", "diag", "spherical", "tied")

# How far from their mean points (and given means) may lie: squared distances, summed over features,
# must stay finite in the working dtype, or k-means and the E-step meet inf - inf.
MAX_SPREAD = {"float64": 1e150, "float32": 1e15}


def check_inputs(
    X: FloatArray,
    n_components: int,
    covariance_type: CovarianceType,
    reg_covar: float,
    dtype: WorkingDtype,
    init_means: Any = None,
    init_covariances: Any = None,
    init_weights: Any = None,
) -> None:
    """Everything :class:`~service.em.gaussian.GaussianMixture` would refuse, without building it."""
    # Imported here: gaussian.py imports this module for the same checks.
    from service.em.gaussian import precisions_from_covariances

    check_options(X, n_components, covariance_type, reg_covar, dtype)
    check_enough_distinct_points(X, n_components)
    shift = check_spread(X, dtype)
    K, d = n_components, X.shape[1]
    if init_means is not None:
        shape_means(init_means, K, d, shift, MAX_SPREAD[dtype])
    if init_weights is not None:
        check_weights(init_weights, K, "init.weights")
    if init_covariances is not None:
        covariances = shape_covariances(init_covariances, K, d, covariance_type)
        floor = variance_floor(X, shift)  # a pass over the points: once
        _, _, collapsed = precisions_from_covariances(covariances, covariance_type, floor)
        if collapsed:
            raise not_positive_definite(collapsed, floor)


def check_options(
    X: FloatArray, n_components: int, covariance_type: str, reg_covar: float, dtype: WorkingDtype
) -> None:
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InvalidParameterError("points must be a non-empty list of numbers or of equal-length rows", "points")
    if not all_finite(X):
        raise InvalidParameterError("points must be finite numbers (no NaN or Infinity)", "points")
    check_model_options(n_components, covariance_type, reg_covar, dtype)


def check_model_options(n_components: int, covariance_type: str, reg_covar: float, dtype: WorkingDtype) -> None:
    """The options' own checks, which need no points (a fit whose points live elsewhere checks those apart)."""
    if covariance_type not in COVARIANCE_TYPES:
        raise InvalidParameterError(f"unknown covariance_type {covariance_type!r}", "covariance_type")
    if not (reg_covar >= 0 and np.isfinite(reg_covar)):
        raise InvalidParameterError(f"reg_covar must be a finite number >= 0, got {reg_covar}", "reg_covar")
    if n_components < 1:
        raise InvalidParameterError(f"n_components must be at least 1, got {n_components}", "n_components")
    if dtype not in MAX_SPREAD:
        raise InvalidParameterError(f"dtype must be 'float64' or 'float32', got {dtype!r}", "dtype")


def not_positive_definite(collapsed: list[int], floor: float) -> InvalidParameterError:
    return InvalidParameterError(
        f"init.covariances of component(s) {collapsed} are not positive definite (or have a variance "
        f"below {floor:.3g}, 1e-10 of the data's spread)",
        "init.covariances",
    )


def check_spread(X: FloatArray, dtype: WorkingDtype) -> FloatArray:
    """The points' mean, after checking every point lies within the working dtype's spread of it."""
    total, column_min, column_max = column_extremes(X)
    shift: FloatArray = total / len(X)
    check_spread_about(shift, column_min, column_max, dtype)
    return shift


def check_spread_about(shift: FloatArray, column_min: FloatArray, column_max: FloatArray, dtype: WorkingDtype) -> None:
    """``check_spread`` from the points' mean and each column's least and largest value."""
    # max |x - mean| per column is reached at the column's min or max: no n x d temporary needed.
    spread = float(max(np.max(column_max - shift), np.max(shift - column_min)))
    max_spread = MAX_SPREAD[dtype]
    if not (np.all(np.isfinite(shift)) and spread <= max_spread):
        raise InvalidParameterError(
            f"points must lie within {max_spread:g} of their mean (here up to {spread:.3g}) so that "
            f"squared distances stay finite in {dtype}; rescale the data",
            "points",
        )


def column_variances(X: FloatArray, shift: FloatArray | None = None) -> FloatArray:
    """Each dimension's variance (about ``shift``, the mean by default), in blocks of rows: no n x d temporary."""
    n = len(X)
    # Without a shift X is the in-memory working copy (a mapped X comes with its shift): numpy's mean will do.
    centre = X.mean(axis=0) if shift is None else shift
    total = np.zeros(X.shape[1])
    for _, block in row_blocks(X):
        total += np.sum(np.square(block - centre), axis=0)
    variances: FloatArray = total / max(n, 1)
    return variances


def variance_floor(X: FloatArray, shift: FloatArray | None = None) -> float:
    """The least variance a component may have: tiny against the data's spread, far above rounding noise."""
    return floor_of(column_variances(X, shift)) if len(X) > 1 else 1e-10


def floor_of(variances: FloatArray) -> float:
    spread = float(np.mean(variances))
    return spread * 1e-10 if spread > 0 else 1e-10


def check_enough_distinct_points(X: FloatArray, n_components: int) -> None:
    if n_components > len(X):
        raise DegenerateDataError(f"n_components is {n_components} but there are only {len(X)} points", "n_components")
    # Usually the first few rows already hold enough distinct points; sort the whole set only if not.
    distinct = len(np.unique(X[: 10 * n_components], axis=0))
    if distinct < n_components:
        distinct = len(np.unique(X, axis=0))
    if distinct < n_components:
        raise DegenerateDataError(
            f"n_components is {n_components} but the points hold only {distinct} distinct value(s); "
            "use at most as many components as distinct points",
            "n_components",
        )


def as_float_array(value: Any, field: str) -> FloatArray:
    """A float64 array of a caller-given nested list; a ragged or non-numeric one is an error naming ``field``."""
    try:
        arr: FloatArray = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidParameterError(
            f"{field} must be a regular array of numbers (every row of the same length)", field
        ) from None
    if not np.all(np.isfinite(arr)):
        raise InvalidParameterError(f"{field} must hold finite numbers", field)
    return arr


def shape_means(means: Any, K: int, d: int, shift: FloatArray, max_spread: float) -> FloatArray:
    """Given means as a (K, d) array (a flat list of K numbers for 1-D data)."""
    arr = as_float_array(means, "init.means")
    if d == 1 and arr.shape == (K,):
        arr = arr[:, None]
    if arr.shape != (K, d):
        raise InvalidParameterError(f"init.means has shape {arr.shape}, expected ({K}, {d})", "init.means")
    if not np.max(np.abs(arr - shift)) <= max_spread:
        raise InvalidParameterError(f"init.means must lie within {max_spread:g} of the points' mean", "init.means")
    return arr


def shape_covariances(
    covariances: Any, K: int, d: int, kind: CovarianceType, field: str = "init.covariances"
) -> FloatArray:
    """Given covariances in the shape ``kind`` needs (flat lists of K variances accepted for 1-D data)."""
    arr = as_float_array(covariances, field)
    expected = {"full": (K, d, d), "diag": (K, d), "spherical": (K,), "tied": (d, d)}[kind]
    if d == 1 and arr.size == int(np.prod(expected)) and arr.ndim <= len(expected):
        arr = arr.reshape(expected)  # 1-D data: flat lists of K variances are accepted for every type
    if arr.shape != expected:
        raise InvalidParameterError(
            f"{field} has shape {arr.shape}, expected {expected} for covariance_type {kind!r}", field
        )
    if kind in ("full", "tied"):
        stack = arr.reshape(-1, d, d)
        if not np.allclose(stack, stack.transpose(0, 2, 1), rtol=1e-10, atol=0):
            raise InvalidParameterError(f"{field} must be symmetric", field)
    return arr
