"""The HMM solver against hmmlearn (same start => same Baum-Welch path), Viterbi against hmmlearn's decode, and
the laws: the log-likelihood never decreases, same seed => same answer, no underflow on 10^6 steps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hmmlearn.hmm import CategoricalHMM, GaussianHMM
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.em.errors import EMError
from service.em.hmm import HiddenMarkovModel, HmmInit, HmmParams
from service.em.hmm_data import encode
from service.em.loop import EMOptions, run_em

LENGTHS = [300, 57, 1, 140, 9]  # several sequences of different lengths (one of a single step)


def _random_params(rng: np.random.Generator, K: int) -> tuple[np.ndarray, np.ndarray]:
    start = rng.dirichlet(np.ones(K))
    transitions = 0.6 * np.eye(K) + 0.4 * rng.dirichlet(np.ones(K), size=K)
    return start, transitions


def _split(values: np.ndarray, lengths: list[int]) -> list[list]:
    return [part.tolist() for part in np.split(values, np.cumsum(lengths)[:-1])]


def _fit(model: HiddenMarkovModel, n_iter: int) -> object:
    return run_em(model, EMOptions(max_iter=n_iter, tol=0.0, seed=0, canonical_order=False))


@pytest.mark.parametrize("block_length", [None, 1, 16])
def test_categorical_follows_hmmlearn(block_length: int | None) -> None:
    rng = np.random.default_rng(1)
    K, S, n_iter = 3, 4, 12
    x = rng.integers(0, S, sum(LENGTHS))
    start, transitions = _random_params(rng, K)
    emissions = rng.dirichlet(np.ones(S), size=K)

    reference = CategoricalHMM(
        n_components=K, n_features=S, init_params="", params="ste", n_iter=n_iter, tol=-np.inf, implementation="log"
    )
    reference.startprob_, reference.transmat_, reference.emissionprob_ = start, transitions, emissions
    reference.fit(x[:, None], LENGTHS)

    sequences = encode(_split(x, LENGTHS), "categorical")
    init = HmmInit(start=start, transitions=transitions, emissions=emissions)
    outcome = _fit(HiddenMarkovModel(sequences, K, "categorical", init=init, block_length=block_length), n_iter)

    history = np.array(reference.monitor_.history)
    ours = np.array([entry.log_likelihood for entry in outcome.trace])
    np.testing.assert_allclose(ours[:-1], history[1:], rtol=1e-6)
    np.testing.assert_allclose(outcome.params.start, reference.startprob_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(outcome.params.transitions, reference.transmat_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(outcome.params.emissions, reference.emissionprob_, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
@pytest.mark.parametrize("block_length", [None, 8])
def test_gaussian_follows_hmmlearn(covariance_type: str, block_length: int | None) -> None:
    rng = np.random.default_rng(2)
    K, d, n_iter = 3, 2, 10
    start, transitions = _random_params(rng, K)
    states = rng.integers(0, K, sum(LENGTHS))
    centres = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]])
    X = centres[states] + rng.normal(size=(sum(LENGTHS), d))
    means = centres + rng.normal(scale=0.5, size=(K, d))
    covariances = np.ones((K, d)) if covariance_type == "diag" else np.tile(np.eye(d), (K, 1, 1))

    reference = GaussianHMM(
        n_components=K, covariance_type=covariance_type, init_params="", params="stmc", n_iter=n_iter, tol=-np.inf,
        covars_prior=0.0, covars_weight=1.0 if covariance_type == "diag" else 0.0, means_weight=0.0,
        implementation="log",
    )  # fmt: skip
    reference.startprob_, reference.transmat_, reference.means_ = start, transitions, means
    reference.covars_ = covariances
    reference.fit(X, LENGTHS)

    sequences = encode(_split(X, LENGTHS), "gaussian")
    init = HmmInit(start=start, transitions=transitions, means=means, covariances=covariances)
    model = HiddenMarkovModel(sequences, K, "gaussian", covariance_type, init=init, block_length=block_length)  # type: ignore[arg-type]
    outcome = _fit(model, n_iter)

    history = np.array(reference.monitor_.history)
    ours = np.array([entry.log_likelihood for entry in outcome.trace])
    np.testing.assert_allclose(ours[:-1], history[1:], rtol=1e-6)
    np.testing.assert_allclose(outcome.params.start, reference.startprob_, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(outcome.params.transitions, reference.transmat_, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(outcome.params.means, reference.means_, rtol=1e-6)
    np.testing.assert_allclose(outcome.params.covariances, reference._covars_, rtol=1e-6)

    # Viterbi paths equal hmmlearn's decode at the fitted parameters (continuous data: no ties)
    reference.startprob_, reference.transmat_ = outcome.params.start, outcome.params.transitions
    reference.means_, reference.covars_ = outcome.params.means, outcome.params.covariances
    _, expected = reference.decode(X, LENGTHS, algorithm="viterbi")
    np.testing.assert_array_equal(model.viterbi(outcome.params), expected)


def test_categorical_viterbi_is_a_most_probable_path() -> None:
    """Symbols tie often; the path may differ from hmmlearn's where it ties, but its probability may not."""
    rng = np.random.default_rng(3)
    K, S = 3, 5
    x = rng.integers(0, S, sum(LENGTHS))
    start, transitions = _random_params(rng, K)
    emissions = rng.dirichlet(np.ones(S), size=K)
    reference = CategoricalHMM(n_components=K, n_features=S, init_params="")
    reference.startprob_, reference.transmat_, reference.emissionprob_ = start, transitions, emissions
    best, _ = reference.decode(x[:, None], LENGTHS, algorithm="viterbi")

    model = HiddenMarkovModel(encode(_split(x, LENGTHS), "categorical"), K, "categorical", block_length=16)
    path = model.viterbi(HmmParams(start, transitions, emissions=emissions))
    starts = np.cumsum([0, *LENGTHS[:-1]])
    first = np.zeros(len(x), dtype=bool)
    first[starts] = True
    log_p = np.log(start[path[first]]).sum() + np.log(emissions[path, x]).sum()
    log_p += np.log(transitions[path[:-1], path[1:]])[~first[1:]].sum()
    assert log_p == pytest.approx(best, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_states=st.integers(1, 4),
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=5),
    emission=st.sampled_from(["categorical", "gaussian"]),
)
def test_log_likelihood_never_decreases(seed: int, n_states: int, lengths: list[int], emission: str) -> None:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    if n < n_states:
        return
    values = rng.integers(0, 3, n) if emission == "categorical" else rng.normal(size=n) + 3 * rng.integers(0, 2, n)
    # Plain maximum likelihood (reg_covar 0): a covariance floor added after the M-step is not a maximiser, and
    # can lower the likelihood (hypothesis found a 1e-4 drop with reg_covar = 1e-3). A state that collapses onto
    # one point sends the likelihood to +inf, which the driver reports as degenerate: no law to check there.
    model = HiddenMarkovModel(encode(_split(values, lengths), emission), n_states, emission, reg_covar=0.0)  # type: ignore[arg-type]
    try:
        outcome = run_em(model, EMOptions(max_iter=30, tol=0.0, seed=seed))
    except EMError:
        assume(False)
    trace = [entry.log_likelihood for entry in outcome.trace]
    for before, after in itertools.pairwise(trace):
        assert after >= before - 1e-9 * max(1.0, abs(before))


@pytest.mark.parametrize("emission", ["categorical", "gaussian"])
def test_same_seed_same_answer(emission: str) -> None:
    rng = np.random.default_rng(4)
    values = rng.integers(0, 4, 500) if emission == "categorical" else rng.normal(size=(500, 2))
    sequences = encode(_split(values, [200, 300]), emission)  # type: ignore[arg-type]
    fits = [run_em(HiddenMarkovModel(sequences, 3, emission), EMOptions(max_iter=20, seed=11, n_init=2)) for _ in "ab"]  # type: ignore[arg-type]
    assert fits[0].log_likelihood == fits[1].log_likelihood
    for name in ("start", "transitions", "emissions", "means", "covariances"):
        first, second = getattr(fits[0].params, name), getattr(fits[1].params, name)
        assert (first is None and second is None) or np.array_equal(first, second)


def test_million_steps_do_not_underflow() -> None:
    """10^6 steps: the log-likelihood is finite, equals hmmlearn's, and equals the sum over the two halves (the
    second started from the distribution the first hands on)."""
    rng = np.random.default_rng(5)
    K, S, T = 2, 3, 1_000_000
    start, transitions = np.array([0.5, 0.5]), np.array([[0.95, 0.05], [0.1, 0.9]])
    emissions = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    x = rng.integers(0, S, T)
    params = HmmParams(start, transitions, emissions=emissions)
    whole = HiddenMarkovModel(encode([x.tolist()], "categorical"), K, "categorical")
    log_likelihood, _ = whole.e_step(params)
    assert np.isfinite(log_likelihood) and log_likelihood < -T * 0.5

    # Independent references: hmmlearn's log-space forward over the whole, and the halves' sum, each half's
    # prior being the state distribution the first half hands on.
    reference = CategoricalHMM(n_components=K, n_features=S, init_params="")
    reference.startprob_, reference.transmat_, reference.emissionprob_ = start, transitions, emissions
    assert log_likelihood == pytest.approx(reference.score(x[:, None]), rel=1e-9)
    first_half, second_half = x[: T // 2, None], x[T // 2 :, None]
    first = reference.score(first_half)
    handed_on = reference.predict_proba(first_half)[-1] @ transitions
    reference.startprob_ = handed_on
    second = reference.score(second_half)
    assert log_likelihood == pytest.approx(first + second, rel=1e-9)


def test_dishonest_casino_recovers_its_parameters() -> None:
    """A long sample of the fair/loaded die: Baum-Welch recovers the loaded die's 1/2 six and the switching rates
    within a few standard errors (errors ~ 1/sqrt(steps spent in a state))."""
    rng = np.random.default_rng(6)
    T = 50_000
    transitions = np.array([[0.95, 0.05], [0.1, 0.9]])
    emissions = np.array([[1 / 6] * 6, [0.1] * 5 + [0.5]])
    states = np.empty(T, dtype=int)
    states[0] = 0
    u = rng.random(T)
    for t in range(1, T):
        states[t] = int(u[t] < transitions[states[t - 1], 1])
    cumulative = emissions.cumsum(axis=1)
    rolls = (rng.random(T)[:, None] > cumulative[states]).sum(axis=1)
    symbols = [str(r + 1) for r in rolls]
    model = HiddenMarkovModel(encode([symbols], "categorical"), 2, "categorical")
    outcome = run_em(model, EMOptions(max_iter=300, tol=1e-8, seed=0, n_init=2))
    params = outcome.params
    loaded = int(np.argmax(params.emissions[:, 5]))
    fair = 1 - loaded
    n_loaded = T / 3  # the chain's stationary share of the loaded die
    tolerance = 6 / np.sqrt(n_loaded)  # a few standard errors, loose because the states are inferred
    assert params.emissions[loaded, 5] == pytest.approx(0.5, abs=tolerance)
    assert params.emissions[fair] == pytest.approx([1 / 6] * 6, abs=tolerance)
    assert params.transitions[fair, loaded] == pytest.approx(0.05, abs=tolerance / 2)
    assert params.transitions[loaded, fair] == pytest.approx(0.1, abs=tolerance)


def test_refusals_name_the_field() -> None:
    with pytest.raises(EMError, match="empty") as empty:
        encode([["a"], []], "categorical")
    assert empty.value.field == "sequences.1"
    with pytest.raises(EMError, match="all strings or all integers"):
        encode([["a", "b"], [1, 2]], "categorical")
    with pytest.raises(EMError, match="same dimension"):
        encode([[[1.0, 2.0]], [[1.0]]], "gaussian")
    with pytest.raises(EMError, match=r"not in init\.emissions\.symbols"):
        encode([["a", "z"]], "categorical", symbols=["a", "b"])
    sequences = encode([["a", "b", "a"]], "categorical")
    with pytest.raises(EMError, match="row 1 sums to"):
        HiddenMarkovModel(sequences, 2, init=HmmInit(transitions=[[0.5, 0.5], [0.5, 0.6]]))
    with pytest.raises(EMError, match="n_states is 4"):
        HiddenMarkovModel(sequences, 4)
