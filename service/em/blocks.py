"""Passes over rows that may live in a memory-mapped file (an uploaded dataset), one block of rows at a time.

A pass over a mapped file faults its pages into the process, and Linux counts them in the process's resident
memory until the file is unmapped: one check over a 1 GB dataset would leave 1 GB more in the API process, and
the fit worker would hold the file beside its working copy. So every pass here hands each block's pages back
(``madvise(MADV_DONTNEED)``) once the caller is done with the block. The mapping is read-only and shared, so
nothing is lost: the bytes stay in the kernel's page cache and a later read maps them again, without disk I/O.
A pass then holds one block of the file, whatever its size. In-memory arrays pass through untouched.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.array_utils import byte_bounds
from numpy.typing import NDArray

BLOCK_ROWS = 1 << 16  # 4 MB of 8-D float64 rows: large enough that a block's numpy calls cost no overhead


class _Mapping:
    """The shared file mapping behind an array, and where it starts in memory."""

    def __init__(self, mapped: mmap.mmap) -> None:
        self.mapped = mapped
        self.start = np.frombuffer(mapped, dtype=np.uint8, count=1).ctypes.data
        self.size = len(mapped)

    def release(self, view: NDArray[Any]) -> None:
        """Drop the pages under ``view`` from this process (whole pages: a neighbour's edge is mapped again
        when it is read)."""
        low, high = byte_bounds(view)
        begin = (low - self.start) // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(self.size, high - self.start)
        if end > begin:
            self.mapped.madvise(mmap.MADV_DONTNEED, begin, end - begin)


def _mapping_of(X: NDArray[Any]) -> _Mapping | None:
    """The mapping under X when X is (a view of) a ``np.memmap`` and this platform can hand pages back."""
    if not hasattr(mmap.mmap, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    base: Any = X
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and isinstance(base.base, mmap.mmap):
            return _Mapping(base.base)
        base = base.base
    return None


def row_blocks(X: NDArray[Any], rows: int = BLOCK_ROWS) -> Iterator[tuple[slice, NDArray[Any]]]:
    """``(rows_slice, X[rows_slice])`` for consecutive blocks of rows; a mapped block's pages are handed back when
    the caller asks for the next block (so a caller must not keep a block, only what it computed from it)."""
    mapping = _mapping_of(X)
    for begin in range(0, len(X), rows):
        where = slice(begin, min(begin + rows, len(X)))
        block = X[where]
        yield where, block
        if mapping is not None:
            mapping.release(block)


def take_rows(X: NDArray[Any], indices: NDArray[np.intp]) -> NDArray[Any]:
    """``X[indices]`` for sorted ``indices``, read a block at a time."""
    parts = []
    for where, block in row_blocks(X):
        lo, hi = np.searchsorted(indices, [where.start, where.stop])
        if hi > lo:
            parts.append(block[indices[lo:hi] - where.start])
    return np.concatenate(parts) if parts else X[indices]


def all_finite(X: NDArray[Any]) -> bool:
    """No NaN and no infinity in X (no n x d boolean temporary)."""
    return all(bool(np.isfinite(block).all()) for _, block in row_blocks(X))


def has_nan(X: NDArray[Any]) -> bool:
    """Any NaN in X (checked X holds no infinities: a NaN then makes its block's sum NaN)."""
    return any(bool(np.isnan(np.sum(block))) for _, block in row_blocks(X))


def column_extremes(X: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Each column's sum, least and largest value, in one pass. The sum equals ``X.sum(axis=0)`` exactly for data
    of one block (numpy adds rows in order along axis 0; blocks only regroup that order for larger data)."""
    total = np.zeros(X.shape[1:])
    low = np.full(X.shape[1:], np.inf)
    high = np.full(X.shape[1:], -np.inf)
    for _, block in row_blocks(X):
        total += block.sum(axis=0)
        np.minimum(low, block.min(axis=0), out=low)
        np.maximum(high, block.max(axis=0), out=high)
    return total, low, high


def argmax_rows(a: NDArray[Any]) -> NDArray[np.intp]:
    """``np.argmax(a, axis=1)`` a block at a time: on a transposed view (as the E-step's n x K log-responsibilities
    are) numpy's argmax first copies the whole array into row order."""
    labels = np.empty(len(a), dtype=np.intp)
    for rows, block in row_blocks(a):
        labels[rows] = np.argmax(block, axis=1)
    return labels
