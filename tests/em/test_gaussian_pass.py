"""The linear passes against scikit-learn and against the whitened pass, to tight tolerance.

The expanded pass (diag, spherical, 1-D) and the quadratic one (full, d <= 2K) in each of their forms: two
components (one log-density difference per row), up to three (one matrix-vector product per component), more
(matrix products); one chunk or many on threads; float64 or float32.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

import service.em.gaussian_pass as gaussian_pass
from service.em.gaussian import GaussianMixture
from service.em.gaussian_pass import Components
from service.em.loop import EMOptions, run_em


def _data(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (6, d))
    return centres[rng.integers(6, size=n)] + rng.normal(size=(n, d)) * rng.uniform(0.3, 2.0, d)


def _start(X: np.ndarray, k: int, covariance_type: str):
    return GaussianMixture(X, k, covariance_type, init_method="random_from_data").initialize(np.random.default_rng(1))


def _ours(X, start, covariance_type, n_iter, dtype="float64"):
    model = GaussianMixture(
        X,
        len(start.weights),
        covariance_type,
        init_means=start.means,
        init_covariances=start.covariances,
        init_weights=start.weights,
        dtype=dtype,
    )
    return run_em(model, EMOptions(max_iter=n_iter, tol=0, canonical_order=False))


def _sklearn(X, start, covariance_type, n_iter):
    covariances = start.covariances
    precisions = np.linalg.inv(covariances) if covariance_type in ("full", "tied") else 1.0 / covariances
    reference = SklearnGaussianMixture(
        len(start.weights),
        covariance_type=covariance_type,
        max_iter=n_iter,
        tol=0.0,
        weights_init=start.weights,
        means_init=start.means,
        precisions_init=precisions,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return reference.fit(X)


def _many_chunks(monkeypatch):
    monkeypatch.setattr(gaussian_pass, "_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(gaussian_pass, "_CHUNK_BYTES", 1)
    monkeypatch.setattr(gaussian_pass, "_MIN_CHUNK_ROWS", 300)


@pytest.mark.parametrize("chunks", ["one", "many"])
@pytest.mark.parametrize("n_components", [2, 3, 5])
# Full covariances take the expanded pass on 1-D data only.
@pytest.mark.parametrize(("covariance_type", "n_features"), [("diag", 1), ("diag", 4), ("spherical", 4), ("full", 1)])
def test_expanded_pass_follows_sklearn(monkeypatch, chunks, n_components, covariance_type, n_features):
    if chunks == "many":
        _many_chunks(monkeypatch)
    X = _data(3000, n_features)
    start = _start(X, n_components, covariance_type)
    ours = _ours(X, start, covariance_type, 20)
    reference = _sklearn(X, start, covariance_type, 20)
    for actual, desired in [
        (ours.params.weights, reference.weights_),
        (ours.params.means, reference.means_),
        (ours.params.covariances, reference.covariances_),
    ]:
        np.testing.assert_allclose(actual, desired, rtol=1e-8, atol=1e-12 * np.max(np.abs(desired)))
    assert ours.log_likelihood / len(X) == pytest.approx(reference.score(X), rel=1e-10)
    # The responsibilities returned (from the general pass) agree with scikit-learn's too.
    np.testing.assert_allclose(np.exp(ours.log_resp), reference.predict_proba(X), rtol=0, atol=1e-9)


@pytest.mark.parametrize("chunks", ["one", "many"])
@pytest.mark.parametrize(("n_components", "n_features"), [(2, 2), (2, 4), (3, 2), (5, 3)])
def test_quadratic_pass_follows_sklearn(monkeypatch, chunks, n_components, n_features):
    if chunks == "many":
        _many_chunks(monkeypatch)
    X = _data(3000, n_features)
    start = _start(X, n_components, "full")
    model = GaussianMixture(X, n_components, "full")
    assert model._design.quadratic  # the pass under test
    ours = _ours(X, start, "full", 20)
    reference = _sklearn(X, start, "full", 20)
    for actual, desired in [
        (ours.params.weights, reference.weights_),
        (ours.params.means, reference.means_),
        (ours.params.covariances, reference.covariances_),
    ]:
        np.testing.assert_allclose(actual, desired, rtol=1e-8, atol=1e-12 * np.max(np.abs(desired)))
    assert ours.log_likelihood / len(X) == pytest.approx(reference.score(X), rel=1e-10)


@pytest.mark.parametrize("n_components", [2, 5])
def test_quadratic_pass_equals_the_whitened_one(n_components):
    """Expanding the quadratic form loses nothing measurable within its reach: the same log-likelihood and sums
    as whitening, with far points, a tight component and correlated coordinates."""
    rng = np.random.default_rng(5)
    mixing = np.array([[1.0, 0.0, 0.0], [0.9, 0.2, 0.0], [0.3, -0.5, 0.1]])
    X = np.vstack([rng.normal(0, 1, (600, 3)) @ mixing, rng.normal(30, 0.1, (20, 3)), rng.normal(-40, 1, (10, 3))])
    model = GaussianMixture(X, n_components, "full", init_method="kmeans")
    params = model.initialize(np.random.default_rng(0))
    design = model._design
    components = Components(params.means - model.shift, params.precisions_cholesky, params.weights)
    assert design.quadratic and design._quadratic_weights(components) is not None
    quadratic = design.expectation(components)
    whitened = design._whitened_expectation(components)
    # The module's rounding bound, eps (|x|_P + |m|_P)^2 per row in the metric of the row's own component, summed:
    # the size of the difference depends on the BLAS kernels (1.6e-12 relative on an Intel Xeon, less on EPYC).
    x_p = np.linalg.norm(np.einsum("nd,kde->kne", model.X, components.precisions_cholesky), axis=2)
    m_p = np.linalg.norm(np.einsum("kd,kde->ke", components.means, components.precisions_cholesky), axis=1)
    own = np.argmax(design.log_responsibilities(components), axis=1)
    bound = np.finfo(float).eps * np.sum((x_p[own, np.arange(len(X))] + m_p[own]) ** 2)
    assert abs(quadratic[0] - whitened[0]) <= bound
    for actual, desired in zip(quadratic[1:], whitened[1:], strict=True):
        for field in ("nk", "first", "second"):
            np.testing.assert_allclose(getattr(actual, field), getattr(desired, field), rtol=1e-9, atol=1e-9)


def test_quadratic_pass_whitens_a_mean_beyond_its_reach():
    """A tight component far from the centre (|m|_P > 1000) would cancel away the expansion's digits: whiten."""
    rng = np.random.default_rng(6)
    X = np.vstack([rng.normal(0, 1, (500, 2)), rng.normal(1e4, 1e-3, (500, 2))])
    model = GaussianMixture(X, 2, "full", init_method="random_from_data")
    tight_far = Components(
        np.array([[0.0, 0.0], [5e3, 5e3]]), np.array([np.eye(2), np.eye(2) * 1e3]), np.array([0.5, 0.5])
    )
    assert model._design._quadratic_weights(tight_far) is None
    whitened = model._design._whitened_expectation(tight_far)
    assert model._design.expectation(tight_far)[0] == whitened[0]
    # A fit through such a start (random_from_data: one point per component, a floored covariance) is sound.
    outcome = run_em(model, EMOptions(max_iter=10, tol=0, seed=0))
    assert np.isfinite(outcome.log_likelihood)


@pytest.mark.parametrize("n_components", [2, 5])
def test_two_component_pass_equals_the_general_one(n_components):
    """The difference form and the K log-densities form: the same log-likelihood and sums, far points too."""
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(0, 1, (500, 3)), rng.normal(30, 0.1, (20, 3)), rng.normal(-300, 1, (3, 3))])
    model = GaussianMixture(X, n_components, "diag", init_method="random_from_data")
    params = model.initialize(np.random.default_rng(0))
    design = model._design
    components = Components(params.means - model.shift, params.precisions_cholesky, params.weights)
    fast = design.expectation(components)
    general = _general_expectation(design, components)
    assert fast[0] == pytest.approx(general[0], rel=1e-13)
    for actual, desired in zip(
        [fast[1].nk, fast[1].first, fast[1].second], [general[1].nk, general[1].first, general[1].second], strict=True
    ):
        np.testing.assert_allclose(actual, desired, rtol=1e-12, atol=1e-300)


def _general_expectation(design, components):
    """The K log-densities pass, whatever the number of components."""
    sums = design.feature_sums
    design.feature_sums = None
    try:
        return design.expectation(components)
    finally:
        design.feature_sums = sums


@pytest.mark.parametrize("n_components", [2, 5])
def test_far_component_stays_at_the_floor_not_nan(n_components):
    """Points hundreds of standard deviations from a component: its responsibilities floor, nothing overflows."""
    rng = np.random.default_rng(4)
    X = np.vstack([rng.normal(0, 1, (400, 2)), rng.normal(1e4, 1, (400, 2))])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        outcome = run_em(
            GaussianMixture(X, n_components, "diag", init_method="random_from_data"),
            EMOptions(max_iter=5, tol=0, seed=0),
        )
    assert np.isfinite(outcome.log_likelihood)
    assert np.all(np.isfinite(outcome.params.means)) and np.all(outcome.params.covariances > 0)


@pytest.mark.parametrize("n_components", [2, 3, 5])
def test_float32_expanded_pass_follows_float64(monkeypatch, n_components):
    _many_chunks(monkeypatch)
    X = _data(4000, 3, seed=2)
    start = _start(X, n_components, "diag")
    double = _ours(X, start, "diag", 15)
    single = _ours(X, start, "diag", 15, dtype="float32")
    assert single.log_likelihood == pytest.approx(double.log_likelihood, rel=1e-6)
    np.testing.assert_allclose(single.params.means, double.params.means, rtol=0, atol=1e-4 * np.abs(X).max())
    np.testing.assert_allclose(single.params.weights, double.params.weights, rtol=0, atol=1e-4)


def test_scratch_is_reused_and_passes_repeat_exactly():
    """Every pass writes into the thread's scratch buffer: the second pass must not see the first's leftovers."""
    X = _data(5000, 4)
    model = GaussianMixture(X, 3, "diag", init_method="random_from_data")
    params = model.initialize(np.random.default_rng(0))
    first = model.e_step(params)
    buffer = model._design._scratch(1)
    second = model.e_step(params)
    assert model._design._scratch(1) is buffer
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1].first, second[1].first)
    np.testing.assert_array_equal(first[1].second, second[1].second)


def test_chunks_are_balanced_over_threads(monkeypatch):
    monkeypatch.setattr(gaussian_pass, "_MIN_CHUNK_ROWS", 100)
    chunks = gaussian_pass._balanced_chunks(1050, 300, work_per_row=2)
    sizes = [c.stop - c.start for c in chunks]
    assert sum(sizes) == 1050 and max(sizes) <= 300 and max(sizes) - min(sizes) < len(chunks)
    assert len(chunks) % 2 == 0 or gaussian_pass._controller_and_pool()[1] is None
    assert [c.start for c in chunks[1:]] == [c.stop for c in chunks[:-1]]
    assert gaussian_pass._balanced_chunks(250, 300, work_per_row=2) == [slice(0, 250)]


def test_a_single_chunk_is_split_over_the_threads_only_when_its_work_is_large(monkeypatch):
    monkeypatch.setattr(gaussian_pass, "chunk_threads", lambda: 2)
    monkeypatch.setattr(gaussian_pass, "_MIN_CHUNK_ROWS", 100)
    monkeypatch.setattr(gaussian_pass, "_SPLIT_WORK", 4000)
    assert gaussian_pass._balanced_chunks(1000, 2000, work_per_row=2) == [slice(0, 1000)]  # 2,000 < 4,000
    assert gaussian_pass._balanced_chunks(1000, 2000, work_per_row=4) == [slice(0, 500), slice(500, 1000)]
    # Never into chunks smaller than the least a product is efficient on.
    assert gaussian_pass._balanced_chunks(150, 2000, work_per_row=40) == [slice(0, 150)]


def test_two_components_sums_by_complement_agree_with_direct_sums():
    """The second of two components' sums, as the chunk's column sums less the first's, equal the direct sums to
    the rounding of the column sums; a second component under 1/64 of the rows is summed directly."""
    from service.em.gaussian_pass import _expanded_sums, _two_component_sums

    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 2.0, size=(4, 5000))
    features = np.vstack([np.ones(5000), x, x**2])
    column_sums = np.sum(features, axis=1)
    for share in (0.5, 0.1, 0.02):
        r1 = rng.uniform(0, 2 * share, 5000)
        resp = np.vstack([1 - r1, r1])
        direct, ours = _expanded_sums(resp, features), _two_component_sums(resp, features, column_sums)
        np.testing.assert_array_equal(ours[0], direct[0])
        scale = 64 * np.finfo(float).eps * np.sum(np.abs(features), axis=1)
        assert np.all(np.abs(ours[1] - direct[1]) <= scale)
    r1 = np.full(5000, 1e-3)  # 0.1% of the rows: summed directly, bit for bit
    resp = np.vstack([1 - r1, r1])
    np.testing.assert_array_equal(_two_component_sums(resp, features, column_sums), _expanded_sums(resp, features))
