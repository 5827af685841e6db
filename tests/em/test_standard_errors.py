"""Standard errors from the observed information, against closed forms and the curvature of independently
written log-likelihoods (scipy.stats), measured by central differences at the estimate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from service.em.alleles import AlleleModel, genetics_of
from service.em.coins import CoinMixture
from service.em.gaussian import GaussianMixture
from service.em.gaussian_information import gaussian_uncertainty, reported_maps
from service.em.loop import EMOptions, run_em

CONVERGE = EMOptions(tol=1e-13, max_iter=20_000, seed=0)


def _numerical_hessian(f, x0, relative_step=1e-4):
    """Central differences, four evaluations per entry: O(h^2) error, about 1e-7 of the entries here."""
    h = relative_step * np.maximum(np.abs(x0), 0.1)
    P = len(x0)
    hessian = np.zeros((P, P))
    for i in range(P):
        for j in range(i, P):
            ei, ej = np.zeros(P), np.zeros(P)
            ei[i], ej[j] = h[i], h[j]
            value = (f(x0 + ei + ej) - f(x0 + ei - ej) - f(x0 - ei + ej) + f(x0 - ei - ej)) / (4 * h[i] * h[j])
            hessian[i, j] = hessian[j, i] = value
    return hessian


def _assert_covariance_matches(ours, log_likelihood, x0, rtol=1e-4):
    reference = np.linalg.inv(-_numerical_hessian(log_likelihood, x0))
    assert ours is not None
    np.testing.assert_allclose(ours, reference, rtol=0, atol=rtol * np.abs(reference).max())


@pytest.mark.parametrize("fit_weights", [True, False])
def test_coin_errors_are_the_inverse_curvature_of_the_binomial_mixture(fit_weights):
    rng = np.random.default_rng(0)
    flips = rng.integers(5, 30, size=200)
    heads = rng.binomial(flips, np.where(rng.integers(2, size=200) == 0, 0.3, 0.75)).astype(float)
    model = CoinMixture(heads, flips - heads, 2, fit_weights=fit_weights)
    outcome = run_em(model, CONVERGE)
    uncertainty, maps = model.uncertainty(outcome.params, outcome.converged)
    fixed_weights = outcome.params.weights

    def log_likelihood(theta):
        weights = np.array([theta[2], 1 - theta[2]]) if fit_weights else fixed_weights
        density = sum(weights[k] * stats.binom.pmf(heads, flips, theta[k]) for k in range(2))
        return np.log(density).sum()

    x0 = np.concatenate([outcome.params.biases, outcome.params.weights[:1] if fit_weights else []])
    _assert_covariance_matches(uncertainty.covariance, log_likelihood, x0)
    assert (maps["weights"] is None) == (not fit_weights)
    if fit_weights:  # the two weights' errors are equal: w_1 = 1 - w_0
        errors = uncertainty.errors_of(maps["weights"])
        assert errors[0] == pytest.approx(errors[1], rel=1e-12)


def test_allele_errors_are_the_inverse_curvature_of_the_multinomial():
    phenotypes = [[("C", "C"), ("C", "I"), ("C", "T")], [("I", "I"), ("I", "T")], [("T", "T")]]
    model = AlleleModel(genetics_of(["C", "I", "T"], phenotypes, "phenotypes"), np.array([85.0, 196.0, 341.0]))
    outcome = run_em(model, CONVERGE)
    uncertainty, maps = model.uncertainty(outcome.params, outcome.converged)

    def log_likelihood(q):
        c, i = q
        t = 1 - c - i
        return 85 * np.log(c * c + 2 * c * i + 2 * c * t) + 196 * np.log(i * i + 2 * i * t) + 341 * np.log(t * t)

    _assert_covariance_matches(uncertainty.covariance, log_likelihood, outcome.params.frequencies[:2], rtol=1e-6)
    # p_T = 1 - p_C - p_I: its variance is the sum of the whole 2 x 2 covariance.
    errors = uncertainty.errors_of(maps["frequencies"])
    assert errors[2] ** 2 == pytest.approx(uncertainty.covariance.sum(), rel=1e-12)


def _unpack(theta, K, d, covariance_type):
    upper = np.triu_indices(d)

    def symmetric(values):
        matrix = np.zeros((d, d))
        matrix[upper] = values
        return matrix + matrix.T - np.diag(np.diag(matrix))

    weights = np.append(theta[: K - 1], 1 - theta[: K - 1].sum())
    means = theta[K - 1 : K - 1 + K * d].reshape(K, d)
    rest = theta[K - 1 + K * d :]
    per = len(upper[0])
    covariances = {
        "full": lambda: [symmetric(rest[k * per : (k + 1) * per]) for k in range(K)],
        "tied": lambda: [symmetric(rest)] * K,
        "diag": lambda: [np.diag(rest[k * d : (k + 1) * d]) for k in range(K)],
        "spherical": lambda: [np.eye(d) * rest[k] for k in range(K)],
    }[covariance_type]()
    return weights, means, covariances


def _packed(params, covariance_type):
    K, d = params.means.shape
    upper = np.triu_indices(d)
    if covariance_type == "full":
        covariances = np.concatenate([params.covariances[k][upper] for k in range(K)])
    elif covariance_type == "tied":
        covariances = params.covariances[upper]
    else:
        covariances = params.covariances.ravel()
    return np.concatenate([params.weights[: K - 1], params.means.ravel(), covariances])


@pytest.mark.parametrize(
    ("covariance_type", "n_features"), [("full", 2), ("full", 3), ("diag", 2), ("spherical", 2), ("tied", 2)]
)
def test_gaussian_errors_are_the_inverse_curvature_of_the_mixture_likelihood(covariance_type, n_features):
    rng = np.random.default_rng(1)
    first = rng.normal(size=(150, n_features)) @ np.triu(np.full((n_features, n_features), 0.5)) + 0.5
    second = rng.normal(size=(100, n_features)) * 0.8 + 4
    X = np.vstack([first, second])
    model = GaussianMixture(X, 2, covariance_type)
    outcome = run_em(model, CONVERGE)
    params = outcome.params
    uncertainty = gaussian_uncertainty(
        X, params.weights, params.means, params.covariances, covariance_type, np.exp(outcome.log_resp), True
    )

    def log_likelihood(theta):
        weights, means, covariances = _unpack(theta, 2, n_features, covariance_type)
        density = sum(
            w * stats.multivariate_normal(m, c).pdf(X) for w, m, c in zip(weights, means, covariances, strict=True)
        )
        return np.log(density).sum()

    _assert_covariance_matches(uncertainty.covariance, log_likelihood, _packed(params, covariance_type))
    assert len(uncertainty.names) == len(_packed(params, covariance_type))


def test_points_one_component_owns_skip_louis_correction_without_changing_the_errors():
    """Groups 30 standard deviations apart: nearly every responsibility rounds to 0 or 1, so nearly every point
    skips the correction's products; the errors still equal the likelihood's inverse curvature."""
    rng = np.random.default_rng(8)
    X = np.vstack([rng.normal(size=(200, 2)) @ np.array([[1.0, 0.4], [0.0, 0.7]]), rng.normal(30, 1.5, (150, 2))])
    outcome = run_em(GaussianMixture(X, 2, "full"), CONVERGE)
    resp = np.exp(outcome.log_resp)
    assert np.mean(np.max(resp, axis=1) == 1.0) > 0.95  # the shortcut is what is under test
    p = outcome.params
    uncertainty = gaussian_uncertainty(X, p.weights, p.means, p.covariances, "full", resp, True)

    def log_likelihood(theta):
        weights, means, covariances = _unpack(theta, 2, 2, "full")
        density = sum(
            w * stats.multivariate_normal(m, c).pdf(X) for w, m, c in zip(weights, means, covariances, strict=True)
        )
        return np.log(density).sum()

    _assert_covariance_matches(uncertainty.covariance, log_likelihood, _packed(p, "full"))


def test_one_normal_group_has_the_textbook_errors():
    """K = 1: SE(mean) = sigma / sqrt(n), SE(variance) = sigma^2 sqrt(2 / n), the MLE's exact information."""
    X = np.random.default_rng(2).normal(3.0, 2.0, size=(500, 1))
    model = GaussianMixture(X, 1, "full", reg_covar=0)
    outcome = run_em(model, CONVERGE)
    params = outcome.params
    uncertainty = gaussian_uncertainty(
        X, params.weights, params.means, params.covariances, "full", np.ones((500, 1)), True
    )
    maps = reported_maps(1, 1, "full")
    variance = X.var()
    assert uncertainty.errors_of(maps["means"])[0] == pytest.approx(np.sqrt(variance / 500), rel=1e-9)
    assert uncertainty.errors_of(maps["covariances"])[0] == pytest.approx(variance * np.sqrt(2 / 500), rel=1e-6)
    assert uncertainty.names == ["means[0][0]", "covariances[0][0][0]"]


def test_no_errors_where_the_information_says_nothing():
    # A coin that came up heads every time: its bias sits at 1, on the boundary.
    model = CoinMixture(np.array([10.0, 10.0, 3.0]), np.array([0.0, 0.0, 7.0]), 2)
    outcome = run_em(model, CONVERGE)
    uncertainty, _ = model.uncertainty(outcome.params, outcome.converged)
    assert uncertainty.covariance is None and "boundary" in uncertainty.warnings[0]
    # A fit stopped before converging is not at a maximum.
    X = np.random.default_rng(3).normal(size=(200, 2))
    stopped = run_em(GaussianMixture(X, 2, "diag"), EMOptions(max_iter=2, tol=1e-12, seed=0))
    p = stopped.params
    early = gaussian_uncertainty(X, p.weights, p.means, p.covariances, "diag", np.exp(stopped.log_resp), False)
    assert early.covariance is None and "did not converge" in early.warnings[0]
    # Two identical columns: the data determine no direction across them (a singular information).
    column = np.random.default_rng(4).normal(size=(300, 1))
    same = np.hstack([column, column + 1e-9 * np.random.default_rng(5).normal(size=(300, 1))])
    fitted = run_em(GaussianMixture(same, 1, "full", reg_covar=0), CONVERGE)
    q = fitted.params
    flat = gaussian_uncertainty(same, q.weights, q.means, q.covariances, "full", np.ones((300, 1)), True)
    assert flat.covariance is None
    assert "singular" in flat.warnings[0] or "indefinite" in flat.warnings[0]


@pytest.mark.slow
def test_wald_intervals_cover_the_truth_95_percent_of_the_time():
    """500 data sets of 1,000 points from a known two-group mixture (fixed seed): the nominal 95% intervals +- 1.96 SE
    cover the true parameters 93-97% of the time, for a weight, both means and a variance."""
    rng = np.random.default_rng(12)
    truth = {"weights[0]": 0.4, "means[0][0]": -1.0, "means[1][0]": 2.0, "covariances[0][0][0]": 1.0}
    n, runs = 1000, 500
    covered = dict.fromkeys(truth, 0)
    for _ in range(runs):
        first = rng.uniform(size=n) < truth["weights[0]"]
        X = np.where(first, rng.normal(-1.0, 1.0, n), rng.normal(2.0, 0.7, n))[:, None]
        start = {"init_means": [[-1.0], [2.0]], "init_covariances": [[[1.0]], [[0.49]]], "init_weights": [0.4, 0.6]}
        outcome = run_em(GaussianMixture(X, 2, "full", **start), EMOptions(tol=1e-12, max_iter=5000, seed=0))
        p = outcome.params
        uncertainty = gaussian_uncertainty(X, p.weights, p.means, p.covariances, "full", np.exp(outcome.log_resp), True)
        estimates = dict(
            zip(
                uncertainty.names, np.concatenate([p.weights[:1], p.means.ravel(), p.covariances[:, 0, 0]]), strict=True
            )
        )
        errors = dict(zip(uncertainty.names, np.sqrt(np.diag(uncertainty.covariance)), strict=True))
        for name, value in truth.items():
            covered[name] += abs(estimates[name] - value) <= 1.96 * errors[name]
    for name, count in covered.items():
        assert 0.93 <= count / runs <= 0.97, (name, count / runs)
