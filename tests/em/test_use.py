"""Fitted parameters used on new data: scikit-learn's predict, predict_proba and score_samples to 1e-10, a
coin model's scores against scipy's binomial, and samples whose moments match the model they came from."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.mixture import GaussianMixture

from service.em.errors import InvalidParameterError
from service.em.use import coin_log_joint, coin_sample, gaussian_log_joint, gaussian_sample, predict

RNG = np.random.default_rng(0)


def _fitted(covariance_type: str, d: int = 3, K: int = 3) -> GaussianMixture:
    """A scikit-learn model with well-separated, correlated components (fitted, so its attributes are whole)."""
    centres = RNG.normal(0, 6, (K, d))
    X = centres[RNG.integers(K, size=3000)] + RNG.normal(size=(3000, d)) @ RNG.normal(size=(d, d))
    return GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(X)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_predictions_equal_scikit_learns(covariance_type):
    model = _fitted(covariance_type)
    X = RNG.normal(0, 8, (500, 3))  # far points too: tiny responsibilities must still match
    ours = predict(gaussian_log_joint(X, model.weights_, model.means_, model.covariances_, covariance_type))
    np.testing.assert_array_equal(ours.labels, model.predict(X))
    np.testing.assert_allclose(ours.responsibilities, model.predict_proba(X), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(ours.log_likelihood, model.score_samples(X), rtol=1e-10)


def test_points_of_another_dimension_are_refused():
    model = _fitted("full")
    with pytest.raises(InvalidParameterError, match="the points have 2 dimensions; the model expects 3"):
        gaussian_log_joint(np.zeros((4, 2)), model.weights_, model.means_, model.covariances_, "full")


def test_a_covariance_that_is_not_positive_definite_is_refused():
    covariances = np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(InvalidParameterError, match="component 1 is not positive definite"):
        gaussian_log_joint(np.zeros((1, 2)), np.array([0.5, 0.5]), np.zeros((2, 2)), covariances, "full")


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_samples_are_reproducible_and_have_the_models_moments(covariance_type):
    model = _fitted(covariance_type, d=2, K=2)
    params = (model.weights_, model.means_, model.covariances_, covariance_type)
    n = 200_000
    points, labels = gaussian_sample(n, *params, seed=5)
    again, _ = gaussian_sample(n, *params, seed=5)
    np.testing.assert_array_equal(points, again)
    full = _as_full(model.covariances_, covariance_type, K=2, d=2)
    for k in range(2):
        members = points[labels == k]
        share = len(members) / n
        # Tolerances from n: 6 standard errors of a proportion, a mean, and a variance.
        assert abs(share - model.weights_[k]) < 6 * np.sqrt(model.weights_[k] * (1 - model.weights_[k]) / n)
        sd = np.sqrt(np.diag(full[k]))
        np.testing.assert_array_less(np.abs(members.mean(axis=0) - model.means_[k]), 6 * sd / np.sqrt(len(members)))
        np.testing.assert_array_less(
            np.abs(np.cov(members.T) - full[k]), 6 * np.sqrt(2.0 / len(members)) * np.outer(sd, sd)
        )


def _as_full(covariances, covariance_type, K, d):
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return np.repeat(covariances[None], K, axis=0)
    if covariance_type == "diag":
        return np.array([np.diag(c) for c in covariances])
    return np.array([c * np.eye(d) for c in covariances])


def test_coin_scores_are_binomial_log_probabilities():
    heads, tails = np.array([0, 3, 10, 7]), np.array([10, 7, 0, 3])
    biases, weights = np.array([0.8, 0.3]), np.array([0.4, 0.6])
    ours = predict(coin_log_joint(heads, tails, biases, weights))
    joint = weights * stats.binom.pmf(heads[:, None], (heads + tails)[:, None], biases)
    np.testing.assert_allclose(ours.log_likelihood, np.log(joint.sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(ours.responsibilities, joint / joint.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(ours.labels, [1, 1, 0, 0])


def test_a_coin_of_bias_one_explains_all_heads_and_nothing_else():
    ours = predict(
        coin_log_joint(np.array([5.0, 4.0]), np.array([0.0, 1.0]), np.array([1.0, 0.5]), np.array([0.5, 0.5]))
    )
    assert ours.labels.tolist() == [0, 1]
    assert ours.responsibilities[1, 0] == 0.0 and np.isfinite(ours.log_likelihood).all()


def test_coin_samples_are_reproducible_and_have_the_models_moments():
    biases, weights, n, flips = np.array([0.8, 0.3]), np.array([0.25, 0.75]), 200_000, 20
    heads, labels = coin_sample(n, flips, biases, weights, seed=3)
    np.testing.assert_array_equal(heads, coin_sample(n, flips, biases, weights, seed=3)[0])
    for k in range(2):
        members = heads[labels == k]
        assert abs(len(members) / n - weights[k]) < 6 * np.sqrt(weights[k] * (1 - weights[k]) / n)
        sd = np.sqrt(flips * biases[k] * (1 - biases[k]))
        assert abs(members.mean() - flips * biases[k]) < 6 * sd / np.sqrt(len(members))
