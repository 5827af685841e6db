"""Row chunks of one pass over the data, spread over the cores this process may use.

numpy's elementwise work (exp, log, squares) runs on one core; only the matrix products are threaded by
BLAS. One Python thread per BLAS thread, each with single-threaded BLAS, keeps every core busy for the
whole pass. Results come back in chunk order whatever the threads did, so a pass's sums are the same
from run to run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

T = TypeVar("T")
Chunk = TypeVar("Chunk")

_lock = threading.Lock()
_state: tuple[ThreadpoolController, ThreadPoolExecutor | None] | None = None


def _controller_and_pool() -> tuple[ThreadpoolController, ThreadPoolExecutor | None]:
    """Made on first use, after numpy has loaded its BLAS, sized by the BLAS thread count of this process.

    A job worker that was given one BLAS thread (several workers sharing the cores) gets no pool at all.
    """
    global _state
    with _lock:
        if _state is None:
            controller = ThreadpoolController()
            threads = max((lib.num_threads for lib in controller.select(user_api="blas").lib_controllers), default=1)
            pool = ThreadPoolExecutor(threads, thread_name_prefix="em-chunk") if threads > 1 else None
            _state = (controller, pool)
        return _state


def chunk_threads() -> int:
    """How many threads ``map_chunks`` runs chunks on (1: in the calling thread)."""
    _, pool = _controller_and_pool()
    return 1 if pool is None else pool._max_workers


def one_blas_thread() -> Any:
    """A context in which BLAS runs single-threaded (for short products a second thread only waits for)."""
    controller, _ = _controller_and_pool()
    return controller.limit(limits=1, user_api="blas")


def row_chunks(n_rows: int, rows_per_chunk: int) -> list[slice]:
    return [slice(start, min(start + rows_per_chunk, n_rows)) for start in range(0, n_rows, rows_per_chunk)]


def map_chunks(work: Callable[[Chunk], T], chunks: Sequence[Chunk]) -> list[T]:
    """``work`` on every chunk, results in chunk order; in parallel when there is more than one chunk."""
    if len(chunks) < 2:
        return [work(rows) for rows in chunks]
    controller, pool = _controller_and_pool()
    if pool is None:
        return [work(rows) for rows in chunks]
    # BLAS threads would compete with ours for the same cores: one each while the pass runs.
    with controller.limit(limits=1, user_api="blas"):
        return list(pool.map(work, chunks))


def weighted_sums(resp: NDArray[np.floating], features: NDArray[np.floating]) -> NDArray[np.float64]:
    """(K x n_chunk) responsibilities times (width x n_chunk) features summed over the rows: (K x width).

    ``np.einsum`` for few components: measured on 2 cores, ``np.matmul`` gains nothing from a second thread
    for such shapes (a short output, a long inner axis), einsum 1.5x; with more components matmul is faster,
    and on a few thousand rows or fewer einsum's set-up costs more than it saves (a small fit's every pass).
    """
    few_components, many_rows = len(resp) <= 4, resp.shape[1] >= 4096
    sums = np.einsum("kc,wc->kw", resp, features) if few_components and many_rows else resp @ features.T
    return sums.astype(np.float64, copy=False)


def sum_of_logs(values: NDArray[np.floating[Any]], largest: float) -> float:
    """The sum of ``log(values)``, values in (1/2, ``largest``]: the logs of products of ``_log_block`` values each
    (a pass's row totals: a row's largest term, about 1, plus smaller ones).

    numpy's double precision log runs one element at a time (its vectorised loop needs AVX-512): 3-5 ns a value,
    measured 4% of a Gaussian pass over 10,000 rows with 8 components and 10% with two, and as much as the exp
    of a coin in the coins' pass. A product of B values is B - 1 multiplies of whole rows, within the dtype's
    range while ``largest``^B is; its rounding (B - 1 ulps at most) is that of adding B logs.
    """
    block = _log_block(largest, values.dtype)
    columns = len(values) // block
    products = np.multiply.reduce(values[: block * columns].reshape(block, columns), axis=0)
    rest = values[block * columns :]
    return float(np.log(products).sum(dtype=np.float64) + np.log(rest).sum(dtype=np.float64))


def _log_block(largest: float, dtype: np.dtype) -> int:
    """How many values of at most ``largest`` (above 1/2) ``sum_of_logs`` multiplies before a log: their product
    stays within 2^(max exponent - 1) and above 2^-64, and a log is saved for 64 values (more would save little)."""
    exponent = _MAX_EXPONENTS[np.dtype(dtype)] - 1
    return max(1, min(64, int(exponent // max(np.log2(largest), 1.0))))


_MAX_EXPONENTS = {np.dtype(t): int(np.finfo(t).maxexp) for t in (np.float64, np.float32)}
