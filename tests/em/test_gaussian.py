"""The Gaussian mixture against scikit-learn (same start => same path), closed forms, and EM's laws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.gaussian import GaussianMixture
from service.em.loop import EMOptions, run_em

COVARIANCE_TYPES = ["full", "diag", "spherical", "tied"]


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack(
        [
            rng.normal([0, 0, 0], 1.0, (120, 3)),
            rng.multivariate_normal([4, 4, 0], [[1, 0.6, 0], [0.6, 2, 0.3], [0, 0.3, 0.5]], 90),
            rng.normal([0, 5, 5], 0.7, (60, 3)),
        ]
    )


def _precisions(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(covariances)
    return 1.0 / covariances


def _sklearn_from(start, X, covariance_type, reg_covar, max_iter):
    reference = SklearnGaussianMixture(
        n_components=len(start.weights),
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        max_iter=max_iter,
        tol=0.0,
        weights_init=start.weights,
        means_init=start.means,
        precisions_init=_precisions(start.covariances, covariance_type),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return reference.fit(X)


def _assert_rel_close(actual, desired, rtol):
    scale = np.max(np.abs(desired))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale)


def _two_groups_1d() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.concatenate([rng.normal(-2.0, 1.0, 150), rng.normal(3.0, 0.5, 100), rng.normal(0.5, 2.0, 50)])[:, None]


def _correlated_2d() -> np.ndarray:
    rng = np.random.default_rng(4)
    return np.vstack(
        [
            rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], 150),
            rng.multivariate_normal([4, 1], [[0.5, -0.2], [-0.2, 2]], 100),
            rng.normal([1, 5], 0.7, (50, 2)),
        ]
    )


def _wide_7d() -> np.ndarray:
    rng = np.random.default_rng(5)
    mixing = rng.normal(size=(7, 7)) / 3
    return np.vstack([rng.normal(rng.normal(0, 3, 7), 1.0, (100, 7)) @ (np.eye(7) + mixing) for _ in range(3)])


# The passes over the data differ by shape: 1-D data and diagonal types expand the log-density in
# [1, x, x^2]; full and tied whiten, with the second moments from pair products when d <= 2K and from
# per-component Gram products (one of them by subtraction) when d > 2K.
@pytest.mark.parametrize("data", [_blobs, _two_groups_1d, _correlated_2d, _wide_7d], ids=["3d", "1d", "2d", "7d"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("reg_covar", [0.0, 1e-6, 0.05, 10.0])
@pytest.mark.parametrize("n_iter", [3, 25])
def test_same_path_as_sklearn(data, covariance_type, reg_covar, n_iter):
    X = data()
    model = GaussianMixture(X, 3, covariance_type, reg_covar=reg_covar, init_method="kmeans")
    start = model.initialize(np.random.default_rng(11))
    # Our start is taken as given by both: feed it back as our own given arrays too.
    ours_model = GaussianMixture(
        X,
        3,
        covariance_type,
        reg_covar,
        init_means=start.means,
        init_covariances=start.covariances,
        init_weights=start.weights,
    )
    ours = run_em(ours_model, EMOptions(max_iter=n_iter, tol=0, canonical_order=False))
    reference = _sklearn_from(start, X, covariance_type, reg_covar, n_iter)
    assert ours.n_iter == n_iter
    # Every entry to 1e-6 relative (an absolute 1e-12 of the array's scale only for entries near zero).
    for actual, desired in [
        (ours.params.weights, reference.weights_),
        (ours.params.means, reference.means_),
        (ours.params.covariances, reference.covariances_),
    ]:
        np.testing.assert_allclose(actual, desired, rtol=1e-6, atol=1e-12 * np.max(np.abs(desired)))
    assert ours.log_likelihood / len(X) == pytest.approx(reference.score(X), rel=1e-9)


def _iris() -> np.ndarray:
    return load_iris().data


def _three_clusters() -> np.ndarray:
    np.random.seed(42)
    return np.vstack([np.random.randn(100, 2) + centre for centre in ([0, 0], [5, 5], [0, 5])])


@pytest.mark.parametrize("data", [_iris, _three_clusters], ids=["iris", "three_clusters"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_n_init_optimum_at_least_as_good_as_sklearn(data, covariance_type):
    X = data()
    reference = SklearnGaussianMixture(3, covariance_type=covariance_type, n_init=10, random_state=0).fit(X)
    ours = run_em(GaussianMixture(X, 3, covariance_type), EMOptions(max_iter=500, n_init=10, seed=0))
    assert ours.log_likelihood / len(X) >= reference.score(X) - 1e-9


def test_one_component_is_the_sample_mean_and_covariance():
    X = _blobs()
    outcome = run_em(GaussianMixture(X, 1, "full", reg_covar=1e-3), EMOptions(max_iter=3))
    np.testing.assert_allclose(outcome.params.means[0], X.mean(axis=0), rtol=1e-12)
    expected = np.cov(X.T, bias=True) + 1e-3 * np.eye(3)
    np.testing.assert_allclose(outcome.params.covariances[0], expected, rtol=1e-10)


def test_bic_and_aic_match_sklearn():
    from service.families.gaussian import GaussianTask
    from service.families.gaussian import solve as solve_gaussian

    X = _three_clusters()
    for covariance_type in COVARIANCE_TYPES:
        solution = solve_gaussian(GaussianTask(EMOptions(max_iter=300, tol=1e-10, seed=0), X, 3, covariance_type))
        reference = SklearnGaussianMixture(3, covariance_type=covariance_type, max_iter=1, tol=0)
        start = solution.outcome.params
        # Evaluate sklearn's criteria at our parameters by loading them as a converged fit.
        reference = _sklearn_from(start, X, covariance_type, 1e-6, 1)
        reference.weights_, reference.means_ = start.weights, start.means
        reference.covariances_, reference.precisions_cholesky_ = start.covariances, start.precisions_cholesky
        assert solution.bic == pytest.approx(reference.bic(X), rel=1e-10)
        assert solution.aic == pytest.approx(reference.aic(X), rel=1e-10)
        assert solution.n_parameters == reference._n_parameters()


def test_collapsing_component_is_regularised_and_reported():
    # Four identical points and a spread: a component that takes the identical points has zero variance.
    X = np.array([[1.0, 1.0]] * 4 + [[5.0, 2.0], [7.0, -1.0], [6.0, 4.0], [9.0, 0.5]])
    model = GaussianMixture(X, 2, "full", reg_covar=0.0, init_means=[[1.0, 1.0], [7.0, 1.0]])
    outcome = run_em(model, EMOptions(max_iter=20, canonical_order=False))
    assert np.isfinite(outcome.log_likelihood)
    assert np.all(np.isfinite(outcome.params.covariances))
    assert any("collapsed" in w for w in outcome.warnings)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_constant_feature_with_no_reg_covar_does_not_crash(covariance_type):
    X = np.column_stack([np.linspace(0, 1, 50), np.zeros(50)])
    outcome = run_em(GaussianMixture(X, 2, covariance_type, reg_covar=0.0), EMOptions(max_iter=10, seed=0))
    assert np.isfinite(outcome.log_likelihood)
    # A spherical variance averages over features, so only the other types see a singular covariance.
    assert any("collapsed" in w for w in outcome.warnings) == (covariance_type != "spherical")


def test_more_components_than_distinct_points_is_rejected():
    with pytest.raises(DegenerateDataError, match="only 2 distinct"):
        GaussianMixture(np.array([[0.0], [0.0], [1.0], [1.0]]), 3)


def test_bad_init_shapes_are_named():
    X = _blobs()
    with pytest.raises(InvalidParameterError, match=r"init.means has shape \(3, 2\), expected \(2, 3\)"):
        GaussianMixture(X, 2, init_means=np.zeros((3, 2)))
    with pytest.raises(InvalidParameterError, match="expected \\(2, 3\\) for covariance_type 'diag'"):
        GaussianMixture(X, 2, "diag", init_covariances=np.ones((2, 2)))
    with pytest.raises(InvalidParameterError, match="not positive definite"):
        GaussianMixture(X, 2, init_covariances=-np.ones((2, 3, 3)))


def test_one_dimensional_flat_init_is_accepted():
    X = np.concatenate([np.linspace(-3, -1, 20), np.linspace(4, 6, 20)])
    for covariance_type in COVARIANCE_TYPES:
        covariances = [1.0] if covariance_type == "tied" else [1.0, 1.0]
        model = GaussianMixture(X, 2, covariance_type, init_means=[-2.0, 5.0], init_covariances=covariances)
        outcome = run_em(model, EMOptions(max_iter=50, canonical_order=False))
        np.testing.assert_allclose(outcome.params.means.ravel(), [-2.0, 5.0], atol=1e-9)


def test_data_far_from_origin_keeps_precision():
    rng = np.random.default_rng(5)
    X = 1e6 + np.concatenate([rng.normal(0, 1, 300), rng.normal(10, 1, 300)])
    outcome = run_em(GaussianMixture(X, 2, "diag"), EMOptions(max_iter=200, seed=0))
    np.testing.assert_allclose(outcome.params.means.ravel(), [1e6, 1e6 + 10], atol=0.2)
    np.testing.assert_allclose(outcome.params.covariances.ravel(), [1.0, 1.0], atol=0.2)


clouds = st.tuples(
    st.integers(1, 3),  # n_features
    st.integers(1, 4),  # n_components
    st.integers(0, 2**32 - 1),  # data seed
    st.sampled_from(COVARIANCE_TYPES),
    st.sampled_from(["kmeans", "kmeans++", "random_from_data", "random"]),
)


@settings(max_examples=40, deadline=None)
@given(cloud=clouds, seed=st.integers(0, 2**32 - 1))
def test_monotonic_likelihood(cloud, seed):
    n_features, n_components, data_seed, covariance_type, init_method = cloud
    rng = np.random.default_rng(data_seed)
    centres = rng.normal(0, 4, (n_components, n_features))
    X = np.vstack([rng.normal(c, rng.uniform(0.3, 2.0), (30, n_features)) for c in centres])
    # The law is EM's: with reg_covar > 0 (or a collapsed component lifted by the floor) the M-step adds
    # to the maximiser, and the likelihood may dip near that regularised fixed point, as in scikit-learn.
    model = GaussianMixture(X, n_components, covariance_type, 0.0, init_method)
    outcome = run_em(model, EMOptions(max_iter=30, tol=0, seed=seed))
    assume(not outcome.warnings)
    lls = np.array([t.log_likelihood for t in outcome.trace])
    assert np.all(np.diff(lls) >= -1e-9 * np.abs(lls[1:]))
    np.testing.assert_allclose(np.exp(outcome.log_resp).sum(axis=1), 1.0, rtol=1e-12)
    assert outcome.n_iter <= 30


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_component_on_a_single_point_is_reported_not_left_to_rounding(covariance_type):
    # Found by hypothesis: a component shrinks onto one point; its variance is ~1e-19 of rounding noise,
    # which Cholesky accepts, and the likelihood then swung by +-0.1 between iterations.
    rng = np.random.default_rng(2)
    X = np.append(rng.normal(0.3, 1.0, 60), 100.0)
    covariances = [1.0, 1.0]
    model = GaussianMixture(X, 2, covariance_type, 0.0, init_means=[0.0, 100.0], init_covariances=covariances)
    outcome = run_em(model, EMOptions(max_iter=30, tol=0, canonical_order=False, trace="loglik"))
    assert any("component(s) [1] collapsed" in w for w in outcome.warnings)
    assert np.min(outcome.params.covariances) >= model.floor
    lls = [t.log_likelihood for t in outcome.trace[1:]]  # once floored, the variance stays put
    assert np.all(np.diff(lls) >= -1e-9 * np.abs(lls[1:]))


def _many_chunks(monkeypatch):
    import service.em.gaussian_pass as gaussian_pass

    monkeypatch.setattr(gaussian_pass, "_CHUNK_ELEMENTS", 1)  # rows per chunk fall to the minimum
    monkeypatch.setattr(gaussian_pass, "_MIN_CHUNK_ROWS", 256)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("n_features", [1, 2, 5, 7])
def test_chunked_parallel_pass_equals_one_chunk(monkeypatch, covariance_type, n_features):
    rng = np.random.default_rng(6)
    X = np.vstack([rng.normal(c, 1.0, (2500, n_features)) for c in (0.0, 4.0, -3.0)])
    options = EMOptions(max_iter=15, tol=0, seed=1)
    whole = run_em(GaussianMixture(X, 3, covariance_type), options)
    _many_chunks(monkeypatch)
    first = run_em(GaussianMixture(X, 3, covariance_type), options)
    again = run_em(GaussianMixture(X, 3, covariance_type), options)
    # Threads finish in any order, but sums are taken in chunk order: identical, run after run.
    assert first.log_likelihood == again.log_likelihood
    np.testing.assert_array_equal(first.params.covariances, again.params.covariances)
    np.testing.assert_array_equal(first.log_resp, again.log_resp)
    # And the same numbers as one chunk, up to the order of summation.
    assert first.log_likelihood == pytest.approx(whole.log_likelihood, rel=1e-12)
    _assert_rel_close(first.params.means, whole.params.means, 1e-10)
    _assert_rel_close(first.params.covariances, whole.params.covariances, 1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("data", [_blobs, _two_groups_1d, _correlated_2d], ids=["3d", "1d", "2d"])
def test_float32_follows_the_float64_path(monkeypatch, data, covariance_type):
    X = data()
    _many_chunks(monkeypatch)
    start = GaussianMixture(X, 3, covariance_type, init_method="random_from_data").initialize(np.random.default_rng(2))
    given = {"init_means": start.means, "init_covariances": start.covariances, "init_weights": start.weights}
    options = EMOptions(max_iter=25, tol=0, canonical_order=False)
    double = run_em(GaussianMixture(X, 3, covariance_type, **given), options)
    single = run_em(GaussianMixture(X, 3, covariance_type, dtype="float32", **given), options)
    # Measured: 1e-7 relative on the log-likelihood, at most 2e-5 on the parameters after 25 iterations.
    assert single.log_likelihood == pytest.approx(double.log_likelihood, rel=1e-6)
    _assert_rel_close(single.params.means, double.params.means, 1e-4)
    _assert_rel_close(single.params.covariances, double.params.covariances, 1e-4)
    _assert_rel_close(single.params.weights, double.params.weights, 1e-4)
    assert single.log_resp.dtype == np.float64


# Found in the warnings summary: a zero weight's log, -inf, in the expanded pass's product made BLAS raise the
# invalid flag (its kernels multiply tile padding by every entry: -inf * 0), reported as a RuntimeWarning.
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("data", [_blobs, _two_groups_1d], ids=["3d", "1d"])
def test_zero_weight_component_stays_empty(data, covariance_type, dtype):
    X = data()
    start = GaussianMixture(X, 3, covariance_type, init_method="random_from_data").initialize(np.random.default_rng(2))
    model = GaussianMixture(
        X,
        3,
        covariance_type,
        init_means=start.means,
        init_covariances=start.covariances,
        init_weights=[0.0, 0.5, 0.5],
        dtype=dtype,
    )
    outcome = run_em(model, EMOptions(max_iter=10, tol=0, canonical_order=False))
    assert np.isfinite(outcome.log_likelihood)
    assert outcome.params.weights[0] < 1e-12
    assert np.all(np.exp(outcome.log_resp[:, 0]) < 1e-12)  # after one M-step its weight is the 10 eps floor
    assert any(w.startswith("component(s) [0] ended with (near) zero weight") for w in outcome.warnings)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_component_given_no_weight_is_reported_empty(covariance_type):
    X = _correlated_2d()
    outcome = run_em(GaussianMixture(X, 2, covariance_type, init_weights=[0.0, 1.0]), EMOptions(seed=0))
    [empty] = np.flatnonzero(outcome.params.weights * len(X) < 1)  # less than one point's share
    assert any(w.startswith(f"component(s) [{empty}] ended with (near) zero weight") for w in outcome.warnings)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_method", ["kmeans", "kmeans++", "random_from_data", "random"])
def test_components_that_coincide_are_reported(covariance_type, init_method):
    # Points of scale 1e-300: their squares underflow, every point looks alike to every component, and
    # both components end on the same mean and covariance.
    X = np.random.default_rng(0).normal(size=(50, 1)) * 1e-300
    outcome = run_em(GaussianMixture(X, 2, covariance_type, init_method=init_method), EMOptions(seed=0))
    means, covariances = outcome.params.means, outcome.params.covariances
    np.testing.assert_allclose(means[0], means[1], rtol=0, atol=1e-6 * np.max(np.abs(X - X.mean())))
    if covariance_type != "tied":
        np.testing.assert_allclose(covariances[0], covariances[1], rtol=1e-6)
    assert any(w.startswith("components [0, 1] coincide") and "rescale" in w for w in outcome.warnings)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_distinct_groups_fitted_to_convergence_carry_no_warning(covariance_type):
    outcome = run_em(GaussianMixture(_three_clusters(), 3, covariance_type), EMOptions(max_iter=500, seed=0))
    assert outcome.converged and outcome.warnings == []
