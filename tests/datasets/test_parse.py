"""Uploaded files into points: every accepted layout reads back exactly; every malformed kind is refused by name."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.datasets.parse import MalformedData, npy_bytes, read_arrow, read_csv, read_npy

POINTS = np.random.default_rng(0).normal(size=(50, 3))


def _write(tmp_path, data: bytes, name: str = "upload"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "array",
    [POINTS, POINTS.astype(np.float32), np.asfortranarray(POINTS), POINTS[:, 0].copy()],
    ids=["float64", "float32", "fortran", "1-D"],
)
def test_npy_reads_back_exactly_memory_mapped(tmp_path, array):
    points = read_npy(_write(tmp_path, npy_bytes(array)))
    assert isinstance(points, np.memmap)
    np.testing.assert_array_equal(points, array)
    assert points.dtype == array.dtype


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (npy_bytes(POINTS)[:-8], "truncated"),
        (npy_bytes(POINTS) + b"\0" * 8, "trailing bytes"),
        (b"not a numpy file at all", "not a NumPy .npy file"),
        (npy_bytes(np.arange(6)), "dtype is int64"),
        (npy_bytes(np.zeros((2, 2, 2))), "3 dimensions"),
        (npy_bytes(np.array([[1.0, np.inf]])), r"points\[0\]\[1\] is infinite"),
        (npy_bytes(np.array([], dtype=np.float64)), "no points"),
    ],
    ids=["truncated", "trailing", "not-npy", "integers", "3-D", "inf", "empty"],
)
def test_malformed_npy_is_refused_naming_the_problem(tmp_path, data, says):
    with pytest.raises(MalformedData, match=says):
        read_npy(_write(tmp_path, data))


def test_a_pickled_object_array_is_refused_before_anything_is_unpickled(tmp_path):
    class Bomb:
        def __reduce__(self):
            return (pytest.fail, ("unpickled",))

    header = io.BytesIO()  # a valid header of an object array, as np.save(allow_pickle=True) writes ...
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (2,)})
    data = header.getvalue() + pickle.dumps(np.array([Bomb(), 1.0], dtype=object))  # ... then the pickle
    with pytest.raises(MalformedData, match="Python objects"):
        read_npy(_write(tmp_path, data))


def test_csv_with_and_without_a_header_reads_back(tmp_path):
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in POINTS)
    np.testing.assert_array_equal(read_csv(_write(tmp_path, body.encode(), "a.csv")), POINTS)
    headed = "x,y,z\n" + body + "\n\n"
    np.testing.assert_array_equal(read_csv(_write(tmp_path, headed.encode(), "b.csv")), POINTS)
    one_column = "value\n1.5\n2\n-3e2\n"
    np.testing.assert_array_equal(read_csv(_write(tmp_path, one_column.encode(), "c.csv")), [1.5, 2.0, -300.0])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("1,2\n3,4\n5\n", "Expected 2 columns, got 1"),
        ("x,y\n1,2\nthree,4\n", "invalid value 'three'"),
        ("x,y\n", "no rows of numbers"),
        ("1,2\n3,inf\n", r"points\[1\]\[1\] is infinite"),
    ],
    ids=["ragged", "text", "header-only", "inf"],
)
def test_malformed_csv_is_refused_naming_the_line(tmp_path, body, says):
    with pytest.raises(MalformedData, match=says):
        read_csv(_write(tmp_path, body.encode()))


def test_csv_that_is_not_text_is_refused(tmp_path):
    with pytest.raises(MalformedData, match="not UTF-8"):
        read_csv(_write(tmp_path, b"\xff\xfe1,2\n3,4\n"))
    with pytest.raises(MalformedData, match="cannot be read"):
        read_csv(_write(tmp_path, b"1,2\n\xff\xfe,3\n"))


def test_csv_too_wide_or_too_long_is_refused_before_it_is_parsed(tmp_path):
    # One line of a million short fields: refused from its length, before anything is split.
    with pytest.raises(MalformedData, match="first line of the CSV is over 320 bytes"):
        read_csv(_write(tmp_path, ("1," * 1_000_000 + "1\n").encode()), max_columns=10)
    with pytest.raises(MalformedData, match="the CSV has 11 columns; this server allows at most 10"):
        read_csv(_write(tmp_path, ("1," * 10 + "1\n").encode()), max_columns=10)
    with pytest.raises(MalformedData, match="more than 100 rows"):
        read_csv(_write(tmp_path, b"1,2\n" * 1000), max_rows=100)


def _arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_arrow_columns_are_the_dimensions(tmp_path):
    table = pa.table({"x": POINTS[:, 0], "y": POINTS[:, 1].astype(np.float32), "n": np.arange(50)})
    expected = np.column_stack([POINTS[:, 0], POINTS[:, 1].astype(np.float32), np.arange(50)])
    np.testing.assert_array_equal(read_arrow(_write(tmp_path, _arrow_stream(table))), expected)


def test_missing_values_are_nan_in_every_format(tmp_path):
    """An empty CSV field, an Arrow null, a NaN in NPY: a missing coordinate, kept for the fit to handle."""
    expected = np.array([[1.0, 2.0], [3.0, np.nan]])
    np.testing.assert_array_equal(read_csv(_write(tmp_path, b"x,y\n1,2\n3,\n", "a.csv")), expected)
    np.testing.assert_array_equal(read_csv(_write(tmp_path, b"1,2\n3,nan\n", "b.csv")), expected)
    table = pa.table({"x": pa.array([1, 3]), "y": pa.array([2.0, None])})
    np.testing.assert_array_equal(read_arrow(_write(tmp_path, _arrow_stream(table), "c.arrow")), expected)
    np.testing.assert_array_equal(read_npy(_write(tmp_path, npy_bytes(expected), "d.npy")), expected)


@pytest.mark.parametrize(
    ("table", "says"),
    [
        (pa.table({"x": [1.0, 2.0], "label": ["a", "b"]}), "column 'label' is string"),
        (pa.table({"x": pa.array([], type=pa.float64())}), "no data"),
    ],
    ids=["strings", "empty"],
)
def test_malformed_arrow_is_refused_naming_the_column(tmp_path, table, says):
    with pytest.raises(MalformedData, match=says):
        read_arrow(_write(tmp_path, _arrow_stream(table)))


def test_bytes_that_are_not_an_arrow_stream_are_refused(tmp_path):
    with pytest.raises(MalformedData, match="not a readable Arrow IPC stream"):
        read_arrow(_write(tmp_path, b"\x00\x01 definitely not arrow"))


def test_an_arrow_stream_with_a_forged_length_is_refused_not_read_past_its_end(tmp_path):
    # Found in an abuse run: a row count raised from 1,000 to 10^12 made numpy read past the mapped file and
    # killed the server with a segfault.
    body = _arrow_stream(pa.table({"x": np.arange(1000, dtype=float)}))
    forged = body.replace(np.int64(1000).tobytes(), np.int64(10**12).tobytes())
    with pytest.raises(MalformedData, match="not a readable Arrow IPC stream"):
        read_arrow(_write(tmp_path, forged))


def test_an_arrow_file_is_told_to_be_sent_as_a_stream(tmp_path):
    sink = pa.BufferOutputStream()
    table = pa.table({"x": [1.0, 2.0]})
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(MalformedData, match="send the IPC stream format"):
        read_arrow(_write(tmp_path, sink.getvalue().to_pybytes()))


def _npy_with_header(header: str, data: bytes, version: bytes = b"\x01\x00") -> bytes:
    encoded = header.encode("latin1")
    return b"\x93NUMPY" + version + len(encoded).to_bytes(2, "little") + encoded + data


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, -1), }\n", b"\0" * 8), "shape"),
        (_npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (True,), }\n", b"\0" * 8), "shape"),
        (_npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n", b"\0" * 8, b"\x04\x00"),
         "format version 4.0"),
        (b"\x93NUMPY\x01\x00\x05\x00{'des", "header cannot be read"),
    ],
    ids=["negative-shape", "boolean-shape", "version-4", "cut-header"],
)  # fmt: skip
def test_forged_npy_headers_are_refused(tmp_path, data, says):
    # Found in an abuse run: each of these was a 500.
    with pytest.raises(MalformedData, match=says):
        read_npy(_write(tmp_path, data))


def test_a_byte_order_mark_is_not_a_header(tmp_path):
    points = read_csv(_write(tmp_path, "\ufeff1,2\n3,4\n".encode()))
    np.testing.assert_array_equal(points, [[1.0, 2.0], [3.0, 4.0]])


def test_a_csv_with_carriage_returns_reads_like_one_with_newlines(tmp_path):
    # Found by Schemathesis: a lone \r in the first line was a 500 (the header check split on \n only).
    np.testing.assert_array_equal(
        read_csv(_write(tmp_path, b"x,y\r1,2\r3,4\r")), read_csv(_write(tmp_path, b"x,y\n1,2\n3,4\n", "b"))
    )
    with pytest.raises(MalformedData, match="cannot be read"):
        read_csv(_write(tmp_path, "\xf2\xa3\xb3\x9b½\r9z=\x03\xc2\x96äÍ".encode(), "c"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.text(alphabet="0123456789.,-+eE \r\n\t\"'xyzNa\x00", max_size=200).map(str.encode),
    )
)
def test_any_bytes_are_points_or_a_malformed_data_refusal(tmp_path, data):
    """Whatever a client uploads, each reader answers an array of numbers (NaN: missing) or MalformedData: never
    another exception (a 500)."""
    path = _write(tmp_path, data, "fuzzed")
    for read in (read_csv, read_npy, read_arrow):
        try:
            points = read(path)
        except MalformedData:
            continue
        assert points.ndim in (1, 2) and not np.any(np.isinf(points))  # NaN: a missing value
