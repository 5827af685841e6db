"""Passes over a memory-mapped dataset hold one block of it, not the file, and compute what numpy would."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from service.em.blocks import BLOCK_ROWS, all_finite, argmax_rows, column_extremes, has_nan, row_blocks, take_rows
from service.em.gaussian import GaussianMixture
from service.em.gaussian_pass import Design

ROWS = 1 << 10  # small blocks, so a 4 MB file is many of them
MAPPING_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")  # "7f...-7f... r--s ... /path" opens a mapping in smaps


def _mapped(tmp_path: Path, X: np.ndarray) -> np.ndarray:
    path = tmp_path / "points.npy"
    np.save(path, X)
    return np.asarray(np.load(path, mmap_mode="r"))  # a plain view of the memmap, as the service holds it


def _resident_kb(path: Path) -> int:
    """Kilobytes of ``path``'s mapping resident in this process (from /proc/self/smaps)."""
    resident, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if MAPPING_HEADER.match(line):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            resident += int(line.split()[1])
    return resident


def test_a_pass_over_a_mapped_file_keeps_about_one_block_resident(tmp_path):
    X = np.random.default_rng(0).normal(size=(8 * BLOCK_ROWS, 8))  # 32 MB: 8 blocks of 4 MB
    mapped = _mapped(tmp_path, X)
    file, block_kb = tmp_path / "points.npy", BLOCK_ROWS * 8 * 8 // 1024
    resident, total = [], 0.0
    for _, block in row_blocks(mapped):
        total += float(block.sum())
        resident.append(_resident_kb(file))
    assert total == pytest.approx(float(X.sum()), rel=1e-12)
    # The block in use, and what the kernel maps around a fault (large page-cache folios): never the file.
    assert max(resident) <= 2 * block_kb, resident
    assert _resident_kb(file) <= block_kb
    mapped.sum()  # the same pass in one call: the whole file stays mapped in
    assert _resident_kb(file) >= 6 * block_kb


def test_blockwise_results_equal_numpy_on_mapped_and_in_memory_data(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5000, 3))
    for data in (X, _mapped(tmp_path, X)):
        total, low, high = column_extremes(data)
        np.testing.assert_allclose(total, X.sum(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(low, X.min(axis=0))
        np.testing.assert_array_equal(high, X.max(axis=0))
        picked = np.sort(rng.choice(len(X), size=700, replace=False))
        np.testing.assert_array_equal(take_rows(data, picked), X[picked])
        assert take_rows(data, picked[:0]).shape == (0, 3)
        assert all_finite(data) and not has_nan(data)
    # one block: the column sums are numpy's own, bit for bit (the mean a fit centres on does not move)
    np.testing.assert_array_equal(column_extremes(X)[0], X.sum(axis=0))
    log_resp = rng.normal(size=(3, 200_000)).T  # the E-step's layout: a transposed view
    np.testing.assert_array_equal(argmax_rows(log_resp), np.argmax(log_resp, axis=1))


def test_nan_and_infinity_are_found_in_any_block():
    X = np.zeros((3 * ROWS, 2))
    X[2 * ROWS + 5, 1] = np.nan
    assert has_nan(X) and not all_finite(X)
    X[2 * ROWS + 5, 1] = np.inf
    assert not has_nan(X) and not all_finite(X)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied"])
def test_a_model_of_a_mapped_dataset_equals_the_model_of_the_array(tmp_path, covariance_type):
    """The design centres the mapped rows as it copies them: the same features as from the centred array."""
    X = np.random.default_rng(2).normal(5.0, 2.0, size=(3000, 4))
    from_file = GaussianMixture(_mapped(tmp_path, X), 3, covariance_type)
    in_memory = GaussianMixture(X, 3, covariance_type)
    reference = Design(X - X.mean(axis=0), 3, covariance_type, np.float64)
    np.testing.assert_array_equal(from_file._design.features, reference.features)
    np.testing.assert_array_equal(in_memory._design.features, reference.features)
    np.testing.assert_array_equal(from_file.shift, X.mean(axis=0))


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_labels_a_chunk_at_a_time_are_the_log_responsibilities_argmax(covariance_type, dtype, monkeypatch):
    monkeypatch.setattr("service.em.gaussian_pass._CHUNK_ELEMENTS", 1 << 10)  # many chunks
    monkeypatch.setattr("service.em.gaussian_pass._CHUNK_BYTES", 1 << 12)
    monkeypatch.setattr("service.em.gaussian_pass._MIN_CHUNK_ROWS", 64)
    X = np.random.default_rng(3).normal(size=(5000, 3)) * [1.0, 2.0, 0.5]
    model = GaussianMixture(X, 4, covariance_type, dtype=dtype)
    params = model.initialize(np.random.default_rng(0))
    assert len(model._design.chunks) > 1
    np.testing.assert_array_equal(model.labels(params), np.argmax(model.log_responsibilities(params), axis=1))


def test_a_fit_that_reports_labels_never_holds_the_n_by_k_responsibilities():
    """K = 20 components over 2-D points: the log-responsibilities would be 10 times the data; the fit's peak
    allocation stays below one such array (tracemalloc sees numpy's allocations). (A start the fit makes itself,
    k-means or random, still assigns the points in an n x K array once.)"""
    from service.em.loop import EMOptions
    from service.families.gaussian import GaussianTask, solve

    X = np.random.default_rng(4).normal(size=(300_000, 2))
    n_by_k = X.shape[0] * 20 * 8
    start = {
        "init_means": X[:20],
        "init_covariances": np.broadcast_to(np.eye(2), (20, 2, 2)),
        "init_weights": [0.05] * 20,
    }
    task = GaussianTask(options=EMOptions(max_iter=3, tol=0.0), X=X, n_components=20, **start)  # a start given whole
    tracemalloc.start()
    try:
        solution = solve(task)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert solution.labels is not None and solution.labels.shape == (X.shape[0],)
    assert peak < n_by_k, f"peak {peak / 2**20:.1f} MB against one n x K array's {n_by_k / 2**20:.1f} MB"
    # asked for later, the responsibilities are still there (one more E-step), and agree with the labels
    np.testing.assert_array_equal(np.argmax(solution.outcome.log_resp, axis=1), solution.labels)
