"""Uploaded data files into checked point arrays: NPY (never unpickled), CSV, an Arrow IPC stream.

Each reader takes a file already written to disk (uploads are streamed there, never held whole in memory)
and returns a float array of shape (n,) or (n, d), or raises :class:`MalformedData` naming what is wrong
in words a caller can act on: the HTTP layer answers it as a 422.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.blocks import row_blocks

# Room for a number in a CSV line ("-1.2345678901234567e-300,"): what bounds the first line's length.
_CSV_BYTES_PER_FIELD = 32


class MalformedData(ValueError):
    """The upload cannot be read as points; ``message`` says why, ``field`` where (for a JSON upload)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a helper process for large uploads: both parts must survive the trip back.
        return (MalformedData, (self.message, self.field))


def read_npy(path: Path) -> NDArray[np.floating[Any]]:
    """A NumPy ``.npy`` file, 1-D or 2-D, float64 or float32, C or Fortran order, memory-mapped.

    The header is read and checked before any data: an object array (which only pickle can hold) is refused
    there, and ``np.load`` runs with ``allow_pickle=False`` all the same.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
        except ValueError:
            raise MalformedData("the body is not a NumPy .npy file (its first bytes are not the NPY magic)") from None
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise MalformedData(f"the .npy file is format version {version[0]}.{version[1]}; send 1.0, 2.0 or 3.0")
        try:
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:  # 3.0 differs from 2.0 only in allowing UTF-8 field names, which no accepted dtype has
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except Exception as exc:
            raise MalformedData(f"the .npy header cannot be read: {type(exc).__name__}: {exc}"[:300]) from None
        data_offset = handle.tell()
    if not all(isinstance(extent, int) and not isinstance(extent, bool) and extent >= 0 for extent in shape):
        raise MalformedData(f"the .npy header's shape {shape!r} is not a tuple of sizes")
    if dtype.hasobject:
        raise MalformedData("the .npy array holds Python objects (pickled data); send float64 or float32 numbers")
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise MalformedData(f"the .npy array's dtype is {dtype}; send float64 or float32 numbers")
    if len(shape) not in (1, 2):
        raise MalformedData(f"the .npy array has {len(shape)} dimensions; send 1-D data or rows of d-D points (2-D)")
    expected = data_offset + math.prod(shape) * dtype.itemsize
    if size != expected:
        raise MalformedData(
            f"the .npy file is {size} bytes but its header (shape {tuple(shape)}, {dtype}) needs {expected}: "
            f"{'truncated' if size < expected else 'trailing bytes after the array'}"
        )
    array: NDArray[np.floating[Any]] = np.load(path, mmap_mode="r", allow_pickle=False)
    return check_points(array)


def read_csv(path: Path, max_columns: int = 1024, max_rows: int = 2_000_000) -> NDArray[np.float64]:
    """Rows of numbers separated by commas, with an optional header line (a first line that is not numbers).

    Read by pyarrow's CSV reader in blocks, every column as float64. The first line is checked before anything
    is split: one enormous line of short fields would otherwise become millions of columns.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    longest_first_line = max_columns * _CSV_BYTES_PER_FIELD
    with open(path, "rb") as handle:
        first = handle.readline(longest_first_line + 1)
    if len(first) > longest_first_line:
        raise MalformedData(
            f"the first line of the CSV is over {longest_first_line} bytes: more than the {max_columns} columns "
            "this server allows"
        )
    try:
        # A byte-order mark is not part of a field; a lone carriage return ends a line, as pyarrow reads it.
        first_line = (first.decode("utf-8-sig").splitlines() or [""])[0]
        fields = next(csv.reader([first_line]), [])
    except UnicodeDecodeError:
        raise MalformedData("the CSV is not UTF-8 text") from None
    except csv.Error as exc:
        raise MalformedData(f"the CSV's first line cannot be read: {exc}") from None
    if not fields:
        raise MalformedData("the CSV holds no rows of numbers")
    if len(fields) > max_columns:
        raise MalformedData(f"the CSV has {len(fields)} columns; this server allows at most {max_columns}")
    has_header = _numbers(fields) is None
    names = [field.strip() for field in fields] if has_header else [f"f{i}" for i in range(len(fields))]
    options = {
        "read_options": pa_csv.ReadOptions(column_names=names, skip_rows=int(has_header), block_size=1 << 20),
        # Every column a number: text is a conversion error naming the value; only an empty field is a null.
        "convert_options": pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64()), null_values=[""]),
    }
    batches, rows = [], 0
    try:
        reader = pa_csv.open_csv(path, **options)
        for batch in reader:
            rows += batch.num_rows
            if rows > max_rows:
                raise MalformedData(f"the CSV has more than {max_rows} rows; this server allows at most {max_rows}")
            batches.append(batch)
    except pa.ArrowException as exc:  # invalid, unreadable or unsupported input alike
        raise MalformedData(f"the CSV cannot be read: {exc}") from None
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if table.num_rows == 0:
        raise MalformedData("the CSV holds no rows of numbers")
    return _table_points(table, "CSV")


def read_arrow(path: Path) -> NDArray[np.float64]:
    """An Arrow IPC stream whose columns are the dimensions: numeric, without nulls."""
    import pyarrow as pa  # imported on first use: only uploads need it

    with open(path, "rb") as handle:
        if handle.read(6) == b"ARROW1":
            raise MalformedData("the body is an Arrow IPC file; send the IPC stream format (pyarrow.ipc.new_stream)")
    try:
        with pa.memory_map(str(path)) as source, pa.ipc.open_stream(source) as reader:
            table = reader.read_all()
        # read_all trusts the lengths the stream declares: a forged one would let numpy read past the buffers
        # (found in an abuse run: a segfault of the server). The full check compares them with the data.
        table.validate(full=True)
    except (pa.ArrowException, OSError) as exc:  # invalid, unreadable or unsupported input alike
        raise MalformedData(f"the body is not a readable Arrow IPC stream: {exc}") from None
    if table.num_columns == 0 or table.num_rows == 0:
        raise MalformedData("the Arrow stream holds no data (it needs at least one column and one row)")
    return _table_points(table, "Arrow")


def _table_points(table: Any, source: str) -> NDArray[np.float64]:
    """The columns of a pyarrow table as the dimensions of the points: numeric; a null is a missing value (NaN)."""
    import pyarrow as pa

    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            raise MalformedData(f"{source} column {name!r} is {column.type}; every column must hold numbers")
        columns.append(column.cast(pa.float64()).to_numpy(zero_copy_only=False))  # nulls become NaN
    points = columns[0] if len(columns) == 1 else np.column_stack(columns)
    return check_points(points)


def check_points(points: NDArray[np.floating[Any]]) -> NDArray[Any]:
    """At least one point of at least one dimension, every value a number or missing (NaN: a Gaussian fit uses
    the observed coordinates), never infinite (scanned in blocks of rows)."""
    if points.size == 0:
        raise MalformedData("the data hold no points")
    for rows, block in row_blocks(points):
        if np.isinf(block).any():
            where = np.argwhere(np.isinf(block))[0]
            where[0] += rows.start
            raise MalformedData(f"points{''.join(f'[{i}]' for i in where.tolist())} is infinite")
    return points


def map_points(path: Path) -> NDArray[np.floating[Any]]:
    """A stored dataset as it was kept (checked at upload), memory-mapped."""
    points: NDArray[np.floating[Any]] = np.load(path, mmap_mode="r", allow_pickle=False)
    return points


def as_rows(points: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """(n, d) float64 rows, also for 1-D data; float64 input (a memory map too) is not copied."""
    rows = np.asarray(points, dtype=np.float64)
    return rows if rows.ndim == 2 else rows[:, None]


def _numbers(fields: list[str]) -> list[float] | None:
    try:
        return [float(field) for field in fields]
    except ValueError:
        return None


def npy_bytes(points: NDArray[Any]) -> bytes:
    """``points`` as the bytes of a .npy file (for tests and clients building an upload)."""
    buffer = io.BytesIO()
    np.save(buffer, points, allow_pickle=False)
    return buffer.getvalue()
