"""One Dask LocalCluster (two worker processes, one thread each) for every test here, and a stored dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster


def blobs(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Three groups in 3-D, far from the origin (the solvers centre the data: their centres must agree too)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 5.0, 1.0]])
    X = centres[rng.integers(3, size=n)] + rng.normal(size=(n, 3)) * rng.uniform(0.5, 1.5, size=3)
    return X + 100.0


@pytest.fixture(scope="session")
def client() -> Iterator[Client]:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as connected,
    ):
        yield connected


@pytest.fixture(scope="session")
def points(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    """3000 rows, stored as a dataset is (a C-ordered float64 .npy file)."""
    X = blobs()
    path = tmp_path_factory.mktemp("datasets") / "blobs.npy"
    np.save(path, X)
    return X, path
