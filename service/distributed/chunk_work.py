"""What a Dask worker does to its chunks of rows: plain functions of numpy arrays, no Dask in sight.

Every pass is the local solver's own: a chunk's rows, centred on the data's mean, go into the same
:class:`~service.em.gaussian_pass.Design` a local fit builds over all rows, and each iteration asks it for the
same ``expectation``. The coordinator (``dask_em``) only submits these functions and adds their results up in
chunk order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.cluster.vq import vq

from service.distributed.storage import NpyLayout, read_rows
from service.em.gaussian_pass import Components, Design, Moments
from service.em.seeding import squared_distances

FloatArray = NDArray[np.float64]


def load_rows(layout: NpyLayout, rows: slice, storage_options: dict[str, Any] | None) -> FloatArray:
    """A chunk's rows from storage: the task Dask reruns when the worker holding them is lost."""
    return read_rows(layout, rows, storage_options)


# --- the first pass: what the data are, before anything is centred ---


@dataclass(frozen=True)
class RawSummary:
    """One chunk's share of the checks and of the data's mean."""

    n_rows: int
    total: FloatArray  # (d,) column sums
    minimum: FloatArray  # (d,)
    maximum: FloatArray  # (d,)
    n_missing: int  # NaN coordinates
    n_infinite: int
    distinct: FloatArray  # up to n_components distinct rows: enough to tell whether the data have that many


def summarise_raw(rows: FloatArray, n_components: int) -> RawSummary:
    missing = np.isnan(rows)
    infinite = np.isinf(rows)
    finite_rows = rows[~(missing | infinite).any(axis=1)]
    return RawSummary(
        n_rows=len(rows),
        total=rows.sum(axis=0),
        minimum=rows.min(axis=0),
        maximum=rows.max(axis=0),
        n_missing=int(np.count_nonzero(missing)),
        n_infinite=int(np.count_nonzero(infinite)),
        distinct=np.unique(finite_rows, axis=0)[:n_components],
    )


# --- a chunk centred, with its pass ---


class CentredChunk:
    """A chunk's rows centred on the data's mean, and the local solver's pass over them.

    ``X`` is the float64 centred rows the starts (k-means, nearest means) work on, as ``GaussianMixture.X``;
    in double precision it is a view into the design's features, as there. Pickled (when Dask moves or spills
    a chunk) as its centred rows: the design is rebuilt where it lands.
    """

    def __init__(self, centred: FloatArray, n_components: int, covariance_type: str, dtype: str) -> None:
        self.settings = (n_components, covariance_type, dtype)
        self.design = Design(centred, n_components, covariance_type, np.dtype(dtype).type)
        self.X: FloatArray = self.design.X if dtype == "float64" else centred  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (CentredChunk, (np.ascontiguousarray(self.X), *self.settings))


def centre(rows: FloatArray, shift: FloatArray, n_components: int, covariance_type: str, dtype: str) -> CentredChunk:
    return CentredChunk(rows - shift, n_components, covariance_type, dtype)


@dataclass(frozen=True)
class CentredSums:
    """One chunk's share of the column variances (about the mean) and, for a tied covariance, of the Gram."""

    squares: FloatArray  # (d,) sum of squared centred coordinates
    gram: FloatArray | None  # (d, d) X^T X of the centred rows


def centred_sums(chunk: CentredChunk, with_gram: bool) -> CentredSums:
    X = chunk.X
    return CentredSums(np.sum(np.square(X), axis=0), X.T @ X if with_gram else None)


# --- the EM passes ---


def expectation(chunk: CentredChunk, components: Components) -> tuple[float, Moments]:
    """The chunk's log-likelihood and responsibility-weighted sums: the local E-step, on these rows."""
    return chunk.design.expectation(components)


def log_responsibilities(chunk: CentredChunk, components: Components) -> FloatArray:
    return np.ascontiguousarray(chunk.design.log_responsibilities(components))


# --- starts: the sums of a start's responsibilities over the chunk ---


def nearest_moments(chunk: CentredChunk, centred_means: FloatArray) -> Moments:
    """Each row to its nearest given mean (``GaussianMixture._nearest_resp``)."""
    return hard_moments(chunk, np.argmin(squared_distances(chunk.X, centred_means), axis=1))


def hard_moments(chunk: CentredChunk, labels: NDArray[np.integer[Any]]) -> Moments:
    """Sums of one-hot responsibilities: row i wholly to component ``labels[i]``."""
    resp = np.zeros((len(chunk.X), chunk.design.n_components))
    resp[np.arange(len(labels)), labels] = 1
    return chunk.design.moments(resp)


def chosen_rows_moments(chunk: CentredChunk, local_rows: NDArray[np.intp]) -> Moments:
    """Component k wholly at row ``local_rows[k]`` of this chunk (-1: elsewhere), every other row nowhere:
    the starts that pick K rows (random_from_data, kmeans++)."""
    resp = np.zeros((len(chunk.X), chunk.design.n_components))
    here = np.flatnonzero(local_rows >= 0)
    resp[local_rows[here], here] = 1
    return chunk.design.moments(resp)


def uniform_moments(chunk: CentredChunk, generator_state: Any, skip: int) -> Moments:
    """The ``random`` start's rows: uniform draws normalised per row, the chunk's share of one stream of n x K
    draws, so they equal the local start's draws row for row (``skip`` = draws before the chunk's first row)."""
    bit_generator = np.random.PCG64()
    bit_generator.state = generator_state
    bit_generator.advance(skip)  # one 64-bit draw per double
    resp = np.random.Generator(bit_generator).uniform(size=(len(chunk.X), chunk.design.n_components))
    resp /= resp.sum(axis=1, keepdims=True)
    return chunk.design.moments(resp)


# --- k-means++ (``service.em.seeding.kmeans_plus_plus``, its arrays split by chunk) ---


def rows_at(chunk: CentredChunk, local_rows: NDArray[np.intp]) -> FloatArray:
    return np.array(chunk.X[local_rows])


def distances_to(chunk: CentredChunk, centre_row: FloatArray) -> FloatArray:
    """Each row's squared distance to one chosen row (the first seed)."""
    return np.sum((chunk.X - centre_row) ** 2, axis=1)  # type: ignore[no-any-return]


def total(values: FloatArray) -> float:
    return float(values.sum())


def locate(closest: FloatArray, targets: FloatArray) -> NDArray[np.intp]:
    """The rows a draw lands on, by the chunk's cumulative weights (``targets`` measured from its start)."""
    found = np.searchsorted(np.cumsum(closest), targets, side="right")
    return np.minimum(found, len(closest) - 1)  # the cumulative sum may round below the target


def to_candidates(chunk: CentredChunk, closest: FloatArray, candidates: FloatArray) -> FloatArray:
    """(trials x m): each row's squared distance to its nearest seed, were each candidate the next."""
    return np.minimum(closest, squared_distances(chunk.X, candidates).T)


def row_sums(values: FloatArray) -> FloatArray:
    return values.sum(axis=1)  # type: ignore[no-any-return]


def pick_row(values: FloatArray, row: int) -> FloatArray:
    return np.array(values[row])


# --- k-means (scipy's ``kmeans2``, its sums split by chunk) ---


@dataclass(frozen=True)
class ClusterSums:
    counts: NDArray[np.int64]  # (K,) rows nearest each centre
    sums: FloatArray  # (K, d) their coordinates summed


def cluster_sums(chunk: CentredChunk, code_book: FloatArray) -> ClusterSums:
    """One Lloyd step's share: rows labelled by their nearest centre (scipy's ``vq``), counted and summed."""
    labels = vq(chunk.X, code_book, check_finite=False)[0]
    K, X = len(code_book), chunk.X
    columns = [np.bincount(labels, weights=X[:, j], minlength=K) for j in range(X.shape[1])]
    sums = np.stack(columns, axis=1, dtype=np.float64)
    return ClusterSums(np.bincount(labels, minlength=K), sums)


def nearest_centre_moments(chunk: CentredChunk, code_book: FloatArray) -> Moments:
    """The k-means start's sums: each row wholly to its nearest centre (scipy's ``vq``, as ``kmeans2``'s labels)."""
    return hard_moments(chunk, vq(chunk.X, code_book, check_finite=False)[0])
