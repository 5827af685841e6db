"""EM over points with missing coordinates, against the observed-data likelihood written independently
(scipy.stats marginals), its direct maximisation, and the complete-data path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from service.em.errors import EMError
from service.em.gaussian import GaussianMixture
from service.em.gaussian_missing import MissingGaussianMixture, full_covariances
from service.em.loop import EMOptions, run_em

TYPES = ["full", "diag", "spherical", "tied"]
CONVERGE = EMOptions(tol=1e-14, max_iter=20_000, seed=0)


def _cloud(n=300, d=3, missing=0.25, seed=0):
    rng = np.random.default_rng(seed)
    mixing = np.array([[1.0, 0.6, 0.2], [0.0, 0.8, -0.4], [0.0, 0.0, 0.5]])[:d, :d]
    X = np.vstack([rng.normal(size=(n // 2, d)) @ mixing, rng.normal(size=(n - n // 2, d)) @ mixing + 3.0])
    holes = rng.uniform(size=X.shape) < missing
    holes[holes.all(axis=1), 0] = False  # every point keeps a coordinate
    X[holes] = np.nan
    return X


def _observed_log_likelihood(X, weights, means, covariances):
    """sum_i log sum_k w_k N(x_iO | mu_kO, S_kOO), one point at a time with scipy."""
    total = 0.0
    for x in X:
        o = ~np.isnan(x)
        density = sum(
            w * stats.multivariate_normal(m[o], c[np.ix_(o, o)]).pdf(x[o])
            for w, m, c in zip(weights, means, covariances, strict=True)
        )
        total += np.log(density)
    return total


@pytest.mark.parametrize("covariance_type", TYPES)
def test_without_missing_values_it_is_the_complete_data_fit(covariance_type):
    X = _cloud(missing=0.0)
    plain = run_em(GaussianMixture(X, 2, covariance_type), EMOptions(seed=1, tol=0, max_iter=25))
    missing = run_em(MissingGaussianMixture(X, 2, covariance_type, 1e-6), EMOptions(seed=1, tol=0, max_iter=25))
    assert missing.log_likelihood == pytest.approx(plain.log_likelihood, rel=1e-12)
    for ours, theirs in [
        (missing.params.weights, plain.params.weights),
        (missing.params.means, plain.params.means),
        (missing.params.covariances, plain.params.covariances),
    ]:
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_log_likelihood_is_the_observed_data_one_and_never_decreases(covariance_type):
    X = _cloud(seed=1)
    model = MissingGaussianMixture(X, 2, covariance_type, 1e-6)
    outcome = run_em(model, EMOptions(seed=2, tol=0, max_iter=40))
    trace = np.array([entry.log_likelihood for entry in outcome.trace])
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[1:]))
    p = outcome.params
    covariances = full_covariances(p.covariances, covariance_type, 2, 3)
    reference = _observed_log_likelihood(X, p.weights, p.means, covariances)
    assert outcome.log_likelihood == pytest.approx(reference, rel=1e-10)


def _unpack_normal(theta, d):
    mean = theta[:d]
    factor = np.zeros((d, d))
    factor[np.tril_indices(d)] = theta[d:]
    return mean, factor @ factor.T


def test_one_group_equals_a_direct_maximisation_of_the_observed_likelihood():
    X = _cloud(seed=3)[:150]  # one group
    outcome = run_em(MissingGaussianMixture(X, 1, "full", 0.0), CONVERGE)

    def negative(theta):
        mean, covariance = _unpack_normal(theta, 3)
        return -_observed_log_likelihood(X, [1.0], [mean], [covariance])

    start = np.concatenate(
        [np.nanmean(X, axis=0), np.linalg.cholesky(np.diag(np.nanvar(X, axis=0)))[np.tril_indices(3)]]
    )
    best = optimize.minimize(negative, start, method="BFGS", options={"gtol": 1e-9})
    mean, covariance = _unpack_normal(best.x, 3)
    np.testing.assert_allclose(outcome.params.means[0], mean, atol=1e-6)
    np.testing.assert_allclose(outcome.params.covariances[0], covariance, atol=1e-6)
    assert outcome.log_likelihood == pytest.approx(-best.fun, rel=1e-10)


def test_two_groups_end_at_a_stationary_point_of_the_observed_likelihood():
    X = _cloud(seed=4)
    outcome = run_em(MissingGaussianMixture(X, 2, "full", 0.0), CONVERGE)
    p = outcome.params
    upper = np.triu_indices(3)

    def log_likelihood(theta):
        weights = np.array([theta[0], 1 - theta[0]])
        means = theta[1:7].reshape(2, 3)
        covariances = []
        for k in range(2):
            c = np.zeros((3, 3))
            c[upper] = theta[7 + 6 * k : 13 + 6 * k]
            covariances.append(c + c.T - np.diag(np.diag(c)))
        return _observed_log_likelihood(X, weights, means, covariances)

    theta = np.concatenate([p.weights[:1], p.means.ravel(), p.covariances[0][upper], p.covariances[1][upper]])
    step = 1e-6 * np.maximum(np.abs(theta), 0.1)
    gradient = [
        (log_likelihood(theta + e) - log_likelihood(theta - e)) / (2 * h)
        for e, h in ((np.eye(len(theta))[i] * step[i], step[i]) for i in range(len(theta)))
    ]
    # A log-likelihood of ~ -1,000: at a maximum its gradient is ~0 (finite differences: ~1e-5).
    assert np.max(np.abs(gradient)) < 1e-3, gradient


def test_imputed_values_are_the_conditional_means():
    X = _cloud(seed=5)[:150]
    model = MissingGaussianMixture(X, 1, "full", 0.0)
    outcome = run_em(model, CONVERGE)
    imputed = model.imputed(outcome.params, outcome.log_resp)
    mean, covariance = outcome.params.means[0], outcome.params.covariances[0]
    for x, filled in zip(X, imputed, strict=True):
        o, m = ~np.isnan(x), np.isnan(x)
        expected = x.copy()
        if m.any():
            expected[m] = mean[m] + covariance[np.ix_(m, o)] @ np.linalg.solve(covariance[np.ix_(o, o)], x[o] - mean[o])
        np.testing.assert_allclose(filled, expected, rtol=1e-10, atol=1e-10)


def test_points_with_nothing_observed_or_a_coordinate_never_observed_are_refused():
    X = _cloud(missing=0.0)[:10]
    empty = X.copy()
    empty[4] = np.nan
    with pytest.raises(EMError, match=r"points\[4\] has no observed coordinate"):
        MissingGaussianMixture(empty, 2, "full", 1e-6)
    never = X.copy()
    never[:, 1] = np.nan
    with pytest.raises(EMError, match="coordinate 1 is missing"):
        MissingGaussianMixture(never, 2, "full", 1e-6)


def test_missing_at_random_beats_mean_imputation_then_a_complete_fit():
    """Data from a known mixture, 30% of entries hidden completely at random: EM over the observed coordinates
    lands near the truth (within a few standard errors, ~1/sqrt(n)); filling the gaps with column means first
    shrinks each group's variances and correlation and lands farther away."""
    rng = np.random.default_rng(11)
    n = 4000
    means = np.array([[0.0, 0.0], [4.0, 4.0]])
    covariance = np.array([[1.0, 0.8], [0.8, 1.0]])
    labels = rng.integers(2, size=n)
    X = means[labels] + rng.multivariate_normal([0, 0], covariance, size=n)
    hidden = X.copy()
    holes = rng.uniform(size=X.shape) < 0.3
    holes[holes.all(axis=1), 0] = False
    hidden[holes] = np.nan
    ours = run_em(MissingGaussianMixture(hidden, 2, "full", 1e-6), EMOptions(tol=1e-10, max_iter=2000, seed=0))
    filled = np.where(np.isnan(hidden), np.nanmean(hidden, axis=0), hidden)
    imputed = run_em(GaussianMixture(filled, 2, "full"), EMOptions(tol=1e-10, max_iter=2000, seed=0))

    def error(params):
        return np.abs(params.means - means).max(), np.abs(params.covariances - covariance).max()

    our_means, our_covariances = error(ours.params)
    their_means, their_covariances = error(imputed.params)
    # Each group has ~2,000 points, 70% of each coordinate observed: a standard error of ~0.03 on a mean.
    assert our_means < 5 / np.sqrt(0.7 * n / 2) and our_covariances < 10 / np.sqrt(0.7 * n / 2)
    assert our_means < their_means and our_covariances < their_covariances / 3
