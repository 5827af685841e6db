"""Rows of a stored .npy file, read by byte range (any fsspec URL) or memory-mapped (a local path)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

from service.distributed.storage import read_layout, read_rows  # noqa: E402
from service.em.errors import InvalidParameterError  # noqa: E402


def _store_in_memory(name: str, array: np.ndarray) -> str:
    """``array`` as a .npy file on fsspec's in-memory filesystem: read like s3://, by byte ranges."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    url = f"memory://datasets/{name}.npy"
    with fsspec.open(url, "wb") as handle:
        handle.write(buffer.getvalue())
    return url


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_byte_ranges_and_memory_maps_read_the_same_rows(tmp_path: Path, dtype: type) -> None:
    array = (np.random.default_rng(0).normal(size=(1000, 3)) * 100).astype(dtype)
    np.save(tmp_path / "points.npy", array)
    for url in (_store_in_memory(f"points-{np.dtype(dtype).name}", array), str(tmp_path / "points.npy")):
        layout = read_layout(url)
        assert (layout.n_rows, layout.n_features) == (1000, 3)
        rows = read_rows(layout, slice(300, 711))
        assert rows.dtype == np.float64
        np.testing.assert_array_equal(rows, array[300:711].astype(np.float64))


def test_one_dimensional_data_are_rows_of_one() -> None:
    array = np.arange(10.0)
    layout = read_layout(_store_in_memory("line", array))
    assert (layout.n_rows, layout.n_features, layout.one_dimensional) == (10, 1, True)
    np.testing.assert_array_equal(read_rows(layout, slice(8, 10)), [[8.0], [9.0]])


def test_refuses_what_has_no_row_ranges() -> None:
    with pytest.raises(InvalidParameterError, match="column-major"):
        read_layout(_store_in_memory("fortran", np.asfortranarray(np.ones((4, 3)))))
    with pytest.raises(InvalidParameterError, match="not numbers"):
        read_layout(_store_in_memory("text", np.array([["a", "b"]])))


def test_a_truncated_file_is_an_error() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((100, 2)))
    with fsspec.open("memory://datasets/short.npy", "wb") as handle:
        handle.write(buffer.getvalue()[:-80])
    layout = read_layout("memory://datasets/short.npy")
    with pytest.raises(InvalidParameterError, match="ends before row 100"):
        read_rows(layout, slice(90, 100))
