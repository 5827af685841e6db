"""The coin mixture against the Do & Batzoglou paper, closed forms, and EM's laws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import gammaln

from service.em.coins import CoinMixture, CoinParams, parse_sequences
from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.loop import EMOptions, run_em
from tests.conftest import DO_BATZOGLOU


def _do_batzoglou(max_iter: int, tol: float = 0.0):
    heads, tails = parse_sequences(DO_BATZOGLOU)
    model = CoinMixture(heads, tails, 2, biases=np.array([0.6, 0.5]))
    return run_em(model, EMOptions(max_iter=max_iter, tol=tol, trace="params", canonical_order=False))


def test_do_batzoglou_first_iteration_matches_paper():
    outcome = _do_batzoglou(max_iter=1)
    np.testing.assert_allclose(outcome.params.biases, [0.71, 0.58], atol=0.005)


def test_do_batzoglou_ten_iterations_match_paper():
    outcome = _do_batzoglou(max_iter=10)
    np.testing.assert_allclose(outcome.params.biases, [0.80, 0.52], atol=0.005)
    np.testing.assert_allclose(outcome.params.biases, [0.7967, 0.5197], atol=5e-5)


def test_do_batzoglou_converges_to_paper_values():
    outcome = _do_batzoglou(max_iter=1000, tol=1e-12)
    assert outcome.converged and outcome.stop_reason == "converged"
    np.testing.assert_allclose(outcome.params.biases, [0.7968, 0.5196], atol=5e-5)


def test_do_batzoglou_first_step_by_hand():
    # One E-step and M-step written out from the binomial likelihoods (the paper's figure 1b).
    heads, tails = parse_sequences(DO_BATZOGLOU)
    like_a = 0.6**heads * 0.4**tails
    like_b = 0.5**heads * 0.5**tails
    resp_a = like_a / (like_a + like_b)
    expected = [
        np.sum(resp_a * heads) / np.sum(resp_a * (heads + tails)),
        np.sum((1 - resp_a) * heads) / np.sum((1 - resp_a) * (heads + tails)),
    ]
    np.testing.assert_allclose(_do_batzoglou(max_iter=1).params.biases, expected, rtol=1e-12)


def test_single_coin_is_the_pooled_proportion():
    heads, tails = np.array([3.0, 7.0, 0.0]), np.array([5.0, 1.0, 4.0])
    outcome = run_em(CoinMixture(heads, tails, 1), EMOptions(max_iter=5))
    assert outcome.params.biases[0] == pytest.approx(10 / 20)
    expected_ll = 10 * np.log(0.5) + 10 * np.log(0.5)
    assert outcome.log_likelihood == pytest.approx(expected_ll)


def test_million_flip_experiments_neither_underflow_nor_overflow():
    heads = np.array([700_000.0, 300_000.0, 710_000.0, 290_000.0])
    tails = 1_000_000.0 - heads
    outcome = run_em(CoinMixture(heads, tails, 2), EMOptions(max_iter=200, seed=3))
    assert np.isfinite(outcome.log_likelihood)
    np.testing.assert_allclose(outcome.params.biases, [0.705, 0.295], atol=1e-9)
    assert np.all(np.isfinite(outcome.log_resp))


def test_fitted_weights_recover_the_mixing_proportions():
    rng = np.random.default_rng(0)
    coins = rng.choice(2, size=4000, p=[0.25, 0.75])
    heads = rng.binomial(50, np.array([0.9, 0.2])[coins]).astype(float)
    outcome = run_em(CoinMixture(heads, 50 - heads, 2, fit_weights=True), EMOptions(max_iter=500, n_init=3, seed=1))
    np.testing.assert_allclose(outcome.params.biases, [0.9, 0.2], atol=0.01)
    np.testing.assert_allclose(outcome.params.weights, [0.25, 0.75], atol=0.02)


def test_unknown_character_is_named():
    with pytest.raises(InvalidParameterError, match=r"sequences\[1\] has 'X' at position 2"):
        parse_sequences(["HT", "hTx h"])


def test_more_coins_than_experiments_is_rejected():
    with pytest.raises(DegenerateDataError, match="n_coins is 3"):
        CoinMixture(np.array([1.0, 2.0]), np.array([1.0, 1.0]), 3)


experiments = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 60)).filter(lambda ht: sum(ht) > 0), min_size=3, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(data=experiments, n_coins=st.integers(1, 3), fit_weights=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_monotonic_likelihood(data, n_coins, fit_weights, seed):
    heads, tails = (np.array(column, dtype=float) for column in zip(*data, strict=True))
    outcome = run_em(CoinMixture(heads, tails, n_coins, fit_weights), EMOptions(max_iter=40, tol=0, seed=seed))
    lls = np.array([t.log_likelihood for t in outcome.trace])
    deltas = np.array([t.delta for t in outcome.trace])
    # EM never decreases the likelihood: exactly, up to the rounding of the final sum at a fixed point
    # (seen: at most 3 units in the last place over 3000 generated fits). The start is included: delta 1.
    # Each experiment's term is rounded on its own, to about eps even when it is 0 (a perfect fit: CI found
    # -4.4e-16 after -2.2e-16 at a log-likelihood of 0), so the bound counts the terms, not just their sum.
    # And a term is the sum of its log binomial coefficient and its log-density part, rounded at their size, not
    # at the term's: six experiments of ~100 flips gave terms of -1 from parts of +-65, and steps of -1.2e-14 at
    # the fixed point of a total of -6.1 (hypothesis found it). |log-density part| <= |term| + log C.
    log_binomial = gammaln(heads + tails + 1) - gammaln(heads + 1) - gammaln(tails + 1)
    magnitude = np.abs(lls) + 2 * np.sum(log_binomial) + len(heads)
    ulps = 8 * np.finfo(np.float64).eps * magnitude
    assert np.all(np.diff(lls) >= -ulps[1:])
    assert np.all(deltas >= -ulps / len(heads))
    np.testing.assert_allclose(np.exp(outcome.log_resp).sum(axis=1), 1.0, rtol=1e-12)


def _reference_pass(heads, tails, biases, weights):
    """The E-step as it was written with scipy: xlogy (0 * log 0 = 0) and logsumexp, n x K."""
    from scipy.special import logsumexp, xlogy

    with np.errstate(divide="ignore"):
        log_joint = xlogy(heads[:, None], biases) + xlogy(tails[:, None], 1 - biases) + np.log(weights)
    log_norm = logsumexp(log_joint, axis=1)
    return log_norm.sum(), log_joint - log_norm[:, None]


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize(
    ("biases", "weights"),
    [
        ([0.3, 0.7, 0.5], [0.2, 0.3, 0.5]),
        ([0.0, 0.7, 0.5], [0.2, 0.3, 0.5]),  # a coin that never shows heads
        ([1.0, 0.0, 0.5], [0.2, 0.3, 0.5]),  # one that never shows tails, one that never shows heads
        ([0.3, 0.7, 0.5], [0.0, 0.5, 0.5]),  # a coin of weight 0
    ],
)
@pytest.mark.parametrize("n_experiments", [500, 12])  # the small numpy pass; the scalar pass (12 x 3 cells)
def test_pass_matches_xlogy_and_logsumexp(biases, weights, n_experiments):
    import service.em.coins as coins

    rng = np.random.default_rng(8)
    heads = rng.integers(0, 30, n_experiments).astype(float)
    tails = rng.integers(0, 30, n_experiments).astype(float)
    cut = max(2, n_experiments // 25)
    heads[:cut], tails[cut : 2 * cut] = 0.0, 0.0  # experiments every extreme coin can produce
    tails[heads + tails == 0] = 1.0
    model = CoinMixture(heads, tails, 3)
    assert (model._pairs is not None) == (n_experiments * 3 <= coins._SCALAR_CELLS)
    params = CoinParams(np.array(biases), np.array(weights))
    expected_ll, expected_log_resp = _reference_pass(heads, tails, params.biases, params.weights)
    log_likelihood, sums = model.e_step(params)
    assert log_likelihood == pytest.approx(expected_ll, rel=1e-13)
    np.testing.assert_allclose(model.log_responsibilities(params), expected_log_resp, rtol=1e-12, atol=1e-12)
    resp = np.exp(expected_log_resp)
    sums = np.transpose(sums) if isinstance(sums, tuple) else sums  # the scalar pass's lists: one per sum
    np.testing.assert_allclose(sums, np.column_stack([resp.T @ heads, resp.T @ tails, resp.sum(axis=0)]), rtol=1e-12)


@pytest.mark.parametrize("n_coins", [1, 2, 3])
def test_scalar_log_responsibilities_match_the_small_pass(n_coins):
    from service.em.coins import _scalar_log_responsibilities

    rng = np.random.default_rng(n_coins)
    heads = rng.integers(0, 40, 12).astype(float)
    tails = rng.integers(1, 40, 12).astype(float)
    model = CoinMixture(heads, tails, n_coins)
    for _ in range(20):
        params = CoinParams(rng.uniform(0.01, 0.99, n_coins), rng.dirichlet(np.ones(n_coins)))
        _, expected_log_resp = _reference_pass(heads, tails, params.biases, params.weights)
        scalar = _scalar_log_responsibilities(model._pairs, params)
        np.testing.assert_allclose(scalar, expected_log_resp, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(model.log_responsibilities(params), scalar)
    for impossible in ([0.0] * n_coins, [1.0] * n_coins, [np.nan] * n_coins):
        assert _scalar_log_responsibilities(model._pairs, CoinParams(np.array(impossible), np.ones(n_coins))) is None


def test_the_two_coin_pass_gives_the_general_scalar_pass_bit_for_bit():
    # Unrolled, not rewritten: the same operations in the same order, so equal floats, ties included.
    from service.em.coins import _scalar_pass, _two_coin_pass

    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        heads = rng.integers(0, 40, n).astype(float)
        pairs = list(zip(heads.tolist(), (rng.integers(0, 40, n) + (heads == 0)).astype(float).tolist(), strict=True))
        biases = rng.uniform(0.01, 0.99, 2)
        weights = rng.dirichlet([1.0, 1.0])
        if rng.random() < 0.2:  # equal coins: every experiment's two joints tie
            biases[1], weights[1] = biases[0], weights[0]
        params = CoinParams(biases, weights)
        assert _two_coin_pass(pairs, params) == _scalar_pass(pairs, params)
    for impossible in ([0.0, 0.5], [0.5, 1.0], [np.nan, 0.5]):
        assert _two_coin_pass([(1.0, 1.0)], CoinParams(np.array(impossible), np.array([0.5, 0.5]))) is None
    assert _two_coin_pass([(1.0, 1.0)], CoinParams(np.array([0.3, 0.6]), np.array([1.0, 0.0]))) is None


@pytest.mark.parametrize("fit_weights", [False, True])
def test_scalar_pass_fits_as_the_array_passes_do(monkeypatch, fit_weights):
    # The same fit with the scalar pass switched off: the same path to the same numbers, up to summation order.
    import service.em.coins as coins

    heads = np.array([5.0, 9.0, 8.0, 4.0, 7.0, 1.0])
    tails = 10.0 - heads
    options = EMOptions(max_iter=200, tol=1e-10, seed=3)
    scalar = run_em(CoinMixture(heads, tails, 3, fit_weights), options)
    monkeypatch.setattr(coins, "_SCALAR_CELLS", 0)
    arrays = run_em(CoinMixture(heads, tails, 3, fit_weights), options)
    assert scalar.n_iter == arrays.n_iter and scalar.stop_reason == arrays.stop_reason == "converged"
    assert scalar.log_likelihood == pytest.approx(arrays.log_likelihood, rel=1e-13)
    np.testing.assert_allclose(scalar.params.biases, arrays.params.biases, rtol=1e-10)
    np.testing.assert_allclose(scalar.params.weights, arrays.params.weights, rtol=1e-10)
    np.testing.assert_allclose(scalar.log_resp, arrays.log_resp, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_coin_at_bias_zero_keeps_fitting():
    # Long experiments make the responsibilities exactly 0/1, so one coin's bias becomes exactly 0:
    # from then on every pass meets log 0, where 0 heads must count as 0 * log 0 = 0.
    heads = np.array([0.0, 0.0, 500.0, 520.0])
    tails = np.array([1000.0, 900.0, 500.0, 480.0])
    model = CoinMixture(heads, tails, 2, biases=np.array([0.01, 0.5]))
    outcome = run_em(model, EMOptions(max_iter=50, tol=1e-12, canonical_order=False))
    assert outcome.converged
    np.testing.assert_array_equal(outcome.params.biases, [0.0, 1020 / 2000])
    expected_ll, expected_log_resp = _reference_pass(heads, tails, outcome.params.biases, outcome.params.weights)
    assert outcome.log_likelihood == pytest.approx(expected_ll, rel=1e-13)
    np.testing.assert_allclose(outcome.log_resp, expected_log_resp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_coins", [1, 2, 4])
def test_chunked_parallel_pass_equals_one_chunk(monkeypatch, n_coins):
    import service.em.coins as coins

    rng = np.random.default_rng(9)
    heads = rng.binomial(40, rng.choice([0.1, 0.4, 0.6, 0.9], 20_000)).astype(float)
    options = EMOptions(max_iter=15, tol=0, seed=2)
    whole = run_em(CoinMixture(heads, 40 - heads, n_coins, fit_weights=True), options)
    monkeypatch.setattr(coins, "_CHUNK_ROWS", 1000)
    first = run_em(CoinMixture(heads, 40 - heads, n_coins, fit_weights=True), options)
    again = run_em(CoinMixture(heads, 40 - heads, n_coins, fit_weights=True), options)
    # Threads finish in any order, but sums are taken in chunk order: identical, run after run.
    assert first.trace == again.trace
    np.testing.assert_array_equal(first.params.biases, again.params.biases)
    # And the same numbers as one chunk, up to the order of summation.
    assert first.log_likelihood == pytest.approx(whole.log_likelihood, rel=1e-13)
    np.testing.assert_allclose(first.params.biases, whole.params.biases, rtol=1e-11)
    np.testing.assert_allclose(first.params.weights, whole.params.weights, rtol=1e-11)


def test_monotonic_likelihood_at_a_perfect_fit():
    # The example CI found: all tails, three coins; the log-likelihood reaches 0 up to rounding.
    heads, tails = np.array([0.0, 0.0, 0.0]), np.array([1.0, 1.0, 58.0])
    outcome = run_em(CoinMixture(heads, tails, 3, True), EMOptions(max_iter=40, tol=0, seed=0))
    lls = np.array([t.log_likelihood for t in outcome.trace])
    assert np.all(np.diff(lls) >= -8 * np.finfo(np.float64).eps * len(heads))
    assert abs(outcome.log_likelihood) < 1e-12
