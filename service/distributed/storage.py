"""Rows of a stored ``.npy`` dataset, read by whoever needs them: a path on a shared volume or an fsspec URL.

A Dask worker reads only its chunk's rows: the file's header says where the data start and how wide a row
is, so a chunk is one byte range (a ranged GET on object storage). A local path is memory-mapped instead,
which reads the same bytes through the page cache. Nothing here knows of Dask: these functions run in the
coordinator and in the workers alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fsspec  # type: ignore[import-untyped]
import numpy as np
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]
from numpy.lib import format as npy_format
from numpy.typing import NDArray

from service.em.errors import InvalidParameterError

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class NpyLayout:
    """Where a ``.npy`` file's rows are: shape (1-D data as n x 1), element type, and the data's byte offset."""

    url: str
    n_rows: int
    n_features: int
    dtype: str  # numpy's dtype string, byte order included ("<f8")
    data_offset: int
    one_dimensional: bool

    @property
    def row_bytes(self) -> int:
        return self.n_features * np.dtype(self.dtype).itemsize


def read_layout(url: str, storage_options: dict[str, Any] | None = None) -> NpyLayout:
    """The header of the ``.npy`` file at ``url``; refuses what a row-wise read cannot take."""
    with fsspec.open(url, "rb", **(storage_options or {})) as handle:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(handle)
        else:
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(handle)
        offset = handle.tell()
    if dtype.kind not in "fiu" or dtype.hasobject:
        raise InvalidParameterError(f"the dataset at {url} holds {dtype}, not numbers", "dataset")
    if len(shape) not in (1, 2):
        raise InvalidParameterError(f"the dataset at {url} has shape {shape}: expected rows of points", "dataset")
    if fortran_order and len(shape) == 2 and shape[1] > 1:
        # Stored datasets are C-ordered (see service.datasets.ingest): a column-major file has no row ranges.
        raise InvalidParameterError(f"the dataset at {url} is stored column-major; store it row-major", "dataset")
    n_features = 1 if len(shape) == 1 else int(shape[1])
    return NpyLayout(url, int(shape[0]), n_features, dtype.str, offset, len(shape) == 1)


def read_rows(layout: NpyLayout, rows: slice, storage_options: dict[str, Any] | None = None) -> FloatArray:
    """Rows ``rows`` of the dataset as an (m, d) float64 array of its own (never a view of a file)."""
    start, stop = rows.start, rows.stop
    options = storage_options or {}
    fs, path = fsspec.core.url_to_fs(layout.url, **options)
    if isinstance(fs, LocalFileSystem):
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        block = mapped[start:stop] if layout.one_dimensional else mapped[start:stop, :]
        return np.array(block, dtype=np.float64).reshape(stop - start, layout.n_features)
    with fs.open(path, "rb") as handle:
        handle.seek(layout.data_offset + start * layout.row_bytes)
        raw = handle.read((stop - start) * layout.row_bytes)
    if len(raw) != (stop - start) * layout.row_bytes:
        raise InvalidParameterError(f"the dataset at {layout.url} ends before row {stop}", "dataset")
    values = np.frombuffer(raw, dtype=np.dtype(layout.dtype))
    return values.astype(np.float64).reshape(stop - start, layout.n_features)
