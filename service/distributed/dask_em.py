"""A Gaussian mixture whose rows live on a Dask cluster; everything else is the local solver's.

The data are a stored ``.npy`` file (a path on a shared volume or an fsspec URL). They are cut into fixed row
chunks; each chunk is loaded by a worker from storage and kept there, centred, with the local solver's
:class:`~service.em.gaussian_pass.Design` built over it. If a worker is lost, Dask reruns the lost chunks' load
from storage on another (the futures held here keep their lineage). Each E-step is one task per chunk; the
coordinator adds the chunks' sums in chunk-index order, so the total does not depend on which worker answered
first, and takes the M-step, the starts' arithmetic and the returned fit's warnings from
:class:`~service.em.gaussian.GaussianMixtureRules`, as a local fit does. The EM loop itself is ``run_em``:
restarts, tolerance, time limit, trace, progress and cancellation (polled between iterations: a task Dask
has started cannot be stopped) behave as for any fit.

Starts are the local ones, computed from the chunks without the rows ever reaching the coordinator: k-means++
and k-means (scipy's ``kmeans2``, 20 Lloyd steps) draw from the same random stream and split only their sums
by chunk; ``random`` gives each chunk its share of the same uniform stream; given means assign each row to the
nearest. The coordinator holds parameters, K rows at a time, and per-chunk sums; only the returned fit's
log-responsibilities (n x K, which its labels come from) are gathered whole.

Agreement with the local fit: in float64, to rounding (1e-15 relative in the tests; the local pass cuts its
rows into other chunks, so sums are added in another order). With ``dtype="float32"`` a chunk's sums are taken
in single precision over differently cut rows, so the two agree to float32's precision only. Points with missing
values are refused (the observed-data pass is not distributed yet). Cancellation is not polled while a start is
being computed (k-means runs some 25 rounds of tasks), only between EM iterations, as ``run_em`` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from distributed import Client, Future
from numpy.typing import NDArray

from service.distributed import chunk_work
from service.distributed.storage import NpyLayout, read_layout
from service.em.chunks import row_chunks
from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.gaussian import DataSummary, GaussianMixtureRules, GaussianParams, Statistics
from service.em.gaussian_checks import CovarianceType, InitMethod, WorkingDtype, check_model_options, check_spread_about
from service.em.gaussian_pass import Moments
from service.em.loop import EMOptions, FitOutcome, Hooks, run_em

FloatArray = NDArray[np.float64]
T = TypeVar("T")

# Rows per chunk unless asked: 64 MiB of float64 rows, large enough that a task's overhead (milliseconds) is
# small beside its pass, small enough that a lost worker's chunks are quick to reload and spread.
_CHUNK_BYTES = 64 << 20
# scipy's kmeans2 as GaussianMixture calls it: 20 iterations, labels from the last one's code book.
_KMEANS_ITERATIONS = 20


def default_chunk_rows(n_features: int) -> int:
    return max(1, _CHUNK_BYTES // (8 * n_features))


class DaskGaussianMixture(GaussianMixtureRules):
    """The EMModel of a Gaussian mixture over a stored dataset, its passes run as Dask tasks, one per chunk.

    Building it loads the chunks on the workers and takes the data's summary (two passes); :meth:`release`
    frees them. Use :func:`fit_on_dask` unless you need the model itself.
    """

    def __init__(
        self,
        client: Client,
        layout: NpyLayout,
        n_components: int,
        covariance_type: CovarianceType = "full",
        reg_covar: float = 1e-6,
        init_method: InitMethod = "kmeans",
        init_means: Any = None,
        init_covariances: Any = None,
        init_weights: Any = None,
        dtype: WorkingDtype = "float64",
        chunk_rows: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        check_model_options(n_components, covariance_type, reg_covar, dtype)
        self._client = client
        self._name = f"em-{uuid.uuid4().hex[:8]}"  # task keys name the fit: readable on the dashboard
        self._passes = 0
        self.chunk_slices = row_chunks(layout.n_rows, chunk_rows or default_chunk_rows(layout.n_features))
        self._chunk_starts = np.array([rows.start for rows in self.chunk_slices])
        raw = [
            client.submit(chunk_work.load_rows, layout, rows, storage_options, key=f"{self._name}-load-{i}")
            for i, rows in enumerate(self.chunk_slices)
        ]
        raw_summaries = self._gather([client.submit(chunk_work.summarise_raw, f, n_components) for f in raw])
        shift = _checked_shift(raw_summaries, layout, n_components, dtype)
        # The centred chunks are what every later task reads; the raw rows are dropped once they exist (Dask
        # keeps the load in their lineage, and reruns it if a worker holding a centred chunk dies).
        self.chunks: list[Future[Any]] = [
            client.submit(
                chunk_work.centre, f, shift, n_components, covariance_type, dtype, key=f"{self._name}-chunk-{i}"
            )
            for i, f in enumerate(raw)
        ]
        del raw
        tied = covariance_type == "tied"
        sums = self._map(chunk_work.centred_sums, tied)
        n = layout.n_rows
        summary = DataSummary(
            n_observations=n,
            n_features=layout.n_features,
            shift=shift,
            column_variances=_sum_in_order([s.squares for s in sums]) / n if n > 1 else np.zeros(layout.n_features),
            # fl(x - s) grows with x: the largest |centred coordinate| is at a column's min or max.
            extent=float(
                max(
                    np.max(_stack_max([s.maximum for s in raw_summaries]) - shift),
                    np.max(shift - _stack_min([s.minimum for s in raw_summaries])),
                )
            ),
            gram=_sum_in_order([s.gram for s in sums if s.gram is not None]) if tied else None,
        )
        super().__init__(
            summary, n_components, covariance_type, reg_covar, init_method, init_means, init_covariances,
            init_weights, dtype,
        )  # fmt: skip

    def release(self) -> None:
        """Frees the chunks on the workers (the model's rules stay usable: warnings, order, output)."""
        self._client.cancel(self.chunks)
        self.chunks = []

    # --- the EM hooks that pass over the rows ---

    def e_step(self, params: GaussianParams) -> tuple[float, Statistics]:
        parts = self._map(chunk_work.expectation, self.components(params))
        log_likelihood = sum(part[0] for part in parts)  # chunk-index order, whoever finished first
        return log_likelihood, self._statistics(_sum_moments([part[1] for part in parts]))

    def log_responsibilities(self, params: GaussianParams) -> FloatArray:
        return np.concatenate(self._map(chunk_work.log_responsibilities, self.components(params)))

    # --- starts ---

    def start_moments(self, rng: np.random.Generator, centred_means: FloatArray | None) -> Moments:
        if centred_means is not None:
            return _sum_moments(self._map(chunk_work.nearest_moments, centred_means))
        if self.init_method == "random":
            return self._uniform_moments(rng)
        if self.init_method == "random_from_data":
            return self._chosen_rows_moments(rng.choice(self.n_observations, size=self.n_components, replace=False))
        seeds = self._kmeans_plus_plus(rng)
        if self.init_method == "kmeans++":
            return self._chosen_rows_moments(seeds)
        code_book = self._lloyd(self._rows(seeds), _KMEANS_ITERATIONS - 1)
        return _sum_moments(self._map(chunk_work.nearest_centre_moments, code_book))

    def _uniform_moments(self, rng: np.random.Generator) -> Moments:
        """GaussianMixture's ``rng.uniform(size=(n, K))``, each chunk drawing its own rows' share of the stream."""
        bit_generator = rng.bit_generator
        if not isinstance(bit_generator, np.random.PCG64):  # run_em's starts always are (default_rng)
            raise InvalidParameterError("a random start on Dask needs a PCG64 generator", "init.method")
        state, K = bit_generator.state, self.n_components
        parts = self._gather(
            [
                self._client.submit(chunk_work.uniform_moments, chunk, state, int(start) * K)
                for chunk, start in zip(self.chunks, self._chunk_starts, strict=True)
            ]
        )
        bit_generator.advance(self.n_observations * K)  # leave the stream where the local start leaves it
        return _sum_moments(parts)

    def _chosen_rows_moments(self, rows: NDArray[np.intp]) -> Moments:
        """Component k wholly at (global) row ``rows[k]``; only the chunks holding one are asked."""
        where, local = self._locate_rows(rows)
        futures = []
        for index in np.unique(where):
            local_rows = np.where(where == index, local, -1)
            futures.append(self._client.submit(chunk_work.chosen_rows_moments, self.chunks[index], local_rows))
        return _sum_moments(self._gather(futures))

    def _kmeans_plus_plus(self, rng: np.random.Generator) -> NDArray[np.intp]:
        """``service.em.seeding.kmeans_plus_plus`` over the chunks: the same draws, its sums split by chunk."""
        n, K = self.n_observations, self.n_components
        trials = 2 + int(np.log(K))
        chosen = [int(rng.integers(n))]
        first = self._rows(np.array(chosen))[0]
        closest = [self._client.submit(chunk_work.distances_to, chunk, first) for chunk in self.chunks]
        for _ in range(1, K):
            chunk_totals = self._gather([self._client.submit(chunk_work.total, c) for c in closest])
            potential = sum(chunk_totals)
            if potential <= 0:
                chosen.append(int(rng.integers(n)))
                continue
            candidates = self._draw(closest, chunk_totals, rng.uniform(size=trials) * potential)
            candidate_rows = self._rows(candidates)
            to_candidates = [
                self._client.submit(chunk_work.to_candidates, chunk, c, candidate_rows)
                for chunk, c in zip(self.chunks, closest, strict=True)
            ]
            totals = _sum_in_order(self._gather([self._client.submit(chunk_work.row_sums, t) for t in to_candidates]))
            best = int(np.argmin(totals))
            chosen.append(int(candidates[best]))
            closest = [self._client.submit(chunk_work.pick_row, t, best) for t in to_candidates]
        return np.asarray(chosen, dtype=np.intp)

    def _draw(self, closest: list[Future[Any]], chunk_totals: Sequence[float], targets: FloatArray) -> NDArray[np.intp]:
        """The rows the global cumulative weights put ``targets`` on: first the chunk, then within it."""
        ends = np.cumsum(chunk_totals)
        where = np.minimum(np.searchsorted(ends, targets, side="right"), len(ends) - 1)
        found = np.empty(len(targets), dtype=np.intp)
        for index in np.unique(where):
            mine = where == index
            before = ends[index - 1] if index > 0 else 0.0
            local = self._client.submit(chunk_work.locate, closest[index], targets[mine] - before).result()
            found[mine] = self._chunk_starts[index] + local
        return found

    def _lloyd(self, code_book: FloatArray, iterations: int) -> FloatArray:
        """scipy's ``kmeans2`` code-book updates: means of the rows nearest each centre; an emptied one stays."""
        for _ in range(iterations):
            parts = self._map(chunk_work.cluster_sums, code_book)
            counts = _sum_in_order([p.counts for p in parts])
            sums = _sum_in_order([p.sums for p in parts])
            updated = code_book.copy()
            has_members = counts > 0
            updated[has_members] = sums[has_members] / counts[has_members, None]
            code_book = updated
        return code_book

    def _rows(self, rows: NDArray[np.intp]) -> FloatArray:
        """The centred coordinates of (global) rows ``rows``, in that order."""
        where, local = self._locate_rows(rows)
        out = np.empty((len(rows), self.n_features))
        for index in np.unique(where):
            mine = where == index
            out[mine] = self._client.submit(chunk_work.rows_at, self.chunks[index], local[mine]).result()
        return out

    def _locate_rows(self, rows: NDArray[np.intp]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Each global row's chunk index and its row within that chunk."""
        rows = np.asarray(rows, dtype=np.intp)
        where = np.searchsorted(self._chunk_starts, rows, side="right") - 1
        return where, rows - self._chunk_starts[where]

    # --- one task per chunk, results in chunk order ---

    def _map(self, work: Callable[..., T], *args: Any) -> list[T]:
        self._passes += 1
        futures = [
            self._client.submit(work, chunk, *args, key=f"{self._name}-{work.__name__}-{self._passes}-{i}")
            for i, chunk in enumerate(self.chunks)
        ]
        return self._gather(futures)

    def _gather(self, futures: list[Future[Any]]) -> list[Any]:
        results: list[Any] = self._client.gather(futures)
        return results


def _checked_shift(
    summaries: Sequence[chunk_work.RawSummary], layout: NpyLayout, n_components: int, dtype: WorkingDtype
) -> FloatArray:
    """The data's mean, after the local model's checks (``check_options``, distinct points, spread)."""
    if layout.n_rows == 0:
        raise InvalidParameterError("points must be a non-empty list of numbers or of equal-length rows", "points")
    if sum(s.n_missing for s in summaries):
        raise InvalidParameterError(
            "points with missing values (NaN) are not fitted on a Dask cluster yet; fit them locally, or drop the "
            "incomplete points",
            "points",
        )
    if sum(s.n_infinite for s in summaries):
        raise InvalidParameterError("points must be finite numbers (no NaN or Infinity)", "points")
    if n_components > layout.n_rows:
        raise DegenerateDataError(
            f"n_components is {n_components} but there are only {layout.n_rows} points", "n_components"
        )
    # Every chunk sent up to K distinct rows: fewer than K in all means the chunks sent all they have.
    distinct = len(np.unique(np.concatenate([s.distinct for s in summaries]), axis=0))
    if distinct < n_components:
        raise DegenerateDataError(
            f"n_components is {n_components} but the points hold only {distinct} distinct value(s); "
            "use at most as many components as distinct points",
            "n_components",
        )
    shift: FloatArray = _sum_in_order([s.total for s in summaries]) / layout.n_rows
    column_min, column_max = _stack_min([s.minimum for s in summaries]), _stack_max([s.maximum for s in summaries])
    check_spread_about(shift, column_min, column_max, dtype)
    return shift


def _sum_in_order(parts: Sequence[NDArray[Any]]) -> NDArray[Any]:
    """Elementwise sum of the chunks' arrays, added in chunk-index order (a fixed order: a fixed total)."""
    total = np.array(parts[0], copy=True)
    for part in parts[1:]:
        total += part
    return total


def _sum_moments(parts: Sequence[Moments]) -> Moments:
    seconds = [p.second for p in parts if p.second is not None]
    return Moments(
        _sum_in_order([p.nk for p in parts]),
        _sum_in_order([p.first for p in parts]),
        _sum_in_order(seconds) if seconds else None,
    )


def _stack_min(parts: Sequence[FloatArray]) -> FloatArray:
    return np.min(np.stack(parts), axis=0)  # type: ignore[no-any-return]


def _stack_max(parts: Sequence[FloatArray]) -> FloatArray:
    return np.max(np.stack(parts), axis=0)  # type: ignore[no-any-return]


@dataclass
class DaskFit:
    """A fit run on Dask: ``run_em``'s outcome, and the model's rules (``to_dict``, ``collapsed_components``,
    ``n_observations``...) to report it with, as the gaussian family's ``solve`` does with a local model."""

    outcome: FitOutcome[GaussianParams]
    model: DaskGaussianMixture


def fit_on_dask(
    cluster: Client | str,
    storage_url: str,
    n_components: int,
    options: EMOptions,
    *,
    covariance_type: CovarianceType = "full",
    reg_covar: float = 1e-6,
    init_method: InitMethod = "kmeans",
    init_means: Any = None,
    init_covariances: Any = None,
    init_weights: Any = None,
    dtype: WorkingDtype = "float64",
    hooks: Hooks | None = None,
    chunk_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> DaskFit:
    """Fit a Gaussian mixture to the stored ``.npy`` dataset at ``storage_url`` on a Dask cluster.

    ``cluster``: a connected ``distributed.Client``, or a scheduler address (a client is then opened and closed
    here). The options are those the gaussian family passes to ``run_em``; as there, results come in canonical
    order unless starting means were given. ``hooks`` are ``run_em``'s: progress after every iteration,
    cancellation polled between iterations (``stop_reason == "cancelled"``). ``storage_options`` go to fsspec
    (credentials of an ``s3://`` URL, say) in the coordinator and in the workers.
    """
    client = cluster if isinstance(cluster, Client) else Client(cluster)
    try:
        layout = read_layout(storage_url, storage_options)
        model = DaskGaussianMixture(
            client, layout, n_components, covariance_type, reg_covar, init_method, init_means, init_covariances,
            init_weights, dtype, chunk_rows, storage_options,
        )  # fmt: skip
        try:
            outcome = run_em(model, replace(options, canonical_order=init_means is None), hooks)
            _ = outcome.log_resp  # taken now, while the chunks are on the cluster (released below)
        finally:
            model.release()
        return DaskFit(outcome, model)
    finally:
        if client is not cluster:
            client.close()
