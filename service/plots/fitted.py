"""What a family's picture function is given, and what a job keeps for its pictures.

A job keeps, next to its result, a small bundle (one ``.npz``, numbers only, never pickled): the model it
kept (JSON), every start's log-likelihood trace, and the family's bounded picture of its data (a histogram, a
subsample of at most 20,000 points, the first sequence...). A kept model has parameters alone: its picture
shows the model, and says so.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

MAX_POINTS = 20_000  # points (experiments, steps) a picture draws at most: past this, a random subsample
_MODEL = "model.json"
_TRACE = "trace."
_DATA = "data."


@dataclass(frozen=True)
class Fitted:
    """One state of a fit, as a family's picture function draws it.

    ``params`` are as a result shows them (the final ones, or a trace snapshot's for an animation frame);
    ``model`` is the kept model's content (``covariance_type``, ``emission``, ``alleles``, ``phenotypes``...);
    ``data`` is the family's picture of the data (empty: none kept, draw the model alone and say so).
    """

    params: dict[str, Any]
    model: dict[str, Any]
    data: Mapping[str, NDArray[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class KeptPicture:
    """A job's bundle, unpacked."""

    model: dict[str, Any]
    traces: dict[str, NDArray[np.float64]]  # start, iteration, log_likelihood (see service.jobs.traces)
    data: dict[str, NDArray[Any]]


def pack(model_json: bytes, traces: Mapping[str, NDArray[Any]], data: Mapping[str, NDArray[Any]]) -> bytes:
    arrays: dict[str, NDArray[Any]] = {_MODEL: np.frombuffer(model_json, dtype=np.uint8)}
    arrays |= {_TRACE + name: np.asarray(values) for name, values in traces.items()}
    arrays |= {_DATA + name: np.asarray(values) for name, values in data.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # names with dots are fine as keywords of a dict
    return buffer.getvalue()


def bundle(
    plot_data: Callable[[Any, Any], Mapping[str, NDArray[Any]]] | None,
    task: Any,
    solution: Any,
    model_json: bytes | None,
    traces: Mapping[str, NDArray[Any]],
) -> bytes:
    """A job's bundle, made in the worker once the fit is solved (``plot_data`` is the family's)."""
    data = {} if plot_data is None else plot_data(task, solution)
    return pack(model_json or b"{}", traces, data)


def unpack(blob: bytes) -> KeptPicture:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    model = orjson.loads(arrays.pop(_MODEL).tobytes())
    traces = {name.removeprefix(_TRACE): v for name, v in arrays.items() if name.startswith(_TRACE)}
    data = {name.removeprefix(_DATA): v for name, v in arrays.items() if name.startswith(_DATA)}
    return KeptPicture(model, traces, data)


def subsample(n: int, limit: int = MAX_POINTS) -> NDArray[np.intp]:
    """Indices of at most ``limit`` of ``n`` observations: all of them, or a random subset (fixed seed, so
    the same job always draws the same points), in their original order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def shown_of(data: Mapping[str, NDArray[Any]], shown: int, what: str) -> str | None:
    """The note a subsampled picture carries ("showing 20,000 of 1,000,000 points, a random subsample")."""
    total = int(data["n_total"]) if "n_total" in data else shown
    return None if total <= shown else f"showing {shown:,} of {total:,} {what} (a random subsample)"


NO_DATA = "the model alone: no data is kept with it (a kept model holds parameters only)"
