"""The EM driver's contract: tolerance, limits, restarts, seeds and trace, for every model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.em.coins import CoinMixture
from service.em.gaussian import GaussianMixture
from service.em.loop import EMOptions, Hooks, run_em, start_seeds


def _gaussian_model(seed: int = 0) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (80, 2)), rng.normal(3, 1, (80, 2)), rng.normal([0, 4], 0.5, (40, 2))])
    return GaussianMixture(X, 3, "full")


def _coin_model(seed: int = 0) -> CoinMixture:
    rng = np.random.default_rng(seed)
    heads = rng.binomial(20, rng.choice([0.2, 0.5, 0.8], 60)).astype(float)
    return CoinMixture(heads, 20 - heads, 3, fit_weights=True)


MODELS = {"gaussian": _gaussian_model, "coins": _coin_model}


@settings(max_examples=25, deadline=None)
@given(
    model_name=st.sampled_from(sorted(MODELS)),
    max_iter=st.integers(1, 60),
    tol=st.sampled_from([0.0, 1e-12, 1e-8, 1e-5, 1e-3, 1e-1]),
    n_init=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    data_seed=st.integers(0, 2**16),
)
def test_converged_agrees_with_tol_and_n_iter_bounded(model_name, max_iter, tol, n_init, seed, data_seed):
    model = MODELS[model_name](data_seed)
    outcome = run_em(model, EMOptions(max_iter=max_iter, tol=tol, n_init=n_init, seed=seed))
    deltas = [t.delta for t in outcome.trace]
    assert 1 <= outcome.n_iter <= max_iter
    assert len(outcome.trace) == outcome.n_iter
    assert [t.iteration for t in outcome.trace] == list(range(1, outcome.n_iter + 1))
    # Converged exactly when the last |delta| met tol; every earlier one did not (or the run would have stopped).
    assert outcome.converged == (tol > 0 and abs(deltas[-1]) <= tol)
    assert all(abs(d) > tol for d in deltas[:-1]) or tol == 0
    assert outcome.stop_reason == ("converged" if outcome.converged else "max_iter")
    # Stopping at max_iter is worth a warning exactly when the caller asked for convergence (tol > 0).
    assert any("without converging" in w for w in outcome.warnings) == (not outcome.converged and tol > 0)
    assert outcome.log_likelihood == max(r.log_likelihood for r in outcome.restarts)
    assert outcome.log_likelihood == outcome.trace[-1].log_likelihood


@settings(max_examples=25, deadline=None)
@given(
    n_features=st.integers(1, 4),
    n_components=st.integers(1, 4),
    covariance_type=st.sampled_from(["full", "diag", "spherical", "tied"]),
    init_method=st.sampled_from(["kmeans", "kmeans++", "random_from_data", "random"]),
    data_seed=st.integers(0, 2**32 - 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_same_seed_same_answer_on_generated_clouds(
    n_features, n_components, covariance_type, init_method, data_seed, seed
):
    rng = np.random.default_rng(data_seed)
    X = np.vstack([rng.normal(rng.normal(0, 4, n_features), 1.0, (40, n_features)) for _ in range(n_components)])
    options = EMOptions(max_iter=30, n_init=2, seed=seed, trace="params")
    first = run_em(GaussianMixture(X, n_components, covariance_type, init_method=init_method), options)
    second = run_em(GaussianMixture(X, n_components, covariance_type, init_method=init_method), options)
    assert first.trace == second.trace and first.restarts == second.restarts
    np.testing.assert_array_equal(first.params.covariances, second.params.covariances)
    np.testing.assert_array_equal(first.log_resp, second.log_resp)


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 80)).filter(lambda ht: sum(ht) > 0), min_size=4),
    n_coins=st.integers(1, 4),
    fit_weights=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_same_seed_same_answer_on_generated_experiments(data, n_coins, fit_weights, seed):
    heads, tails = (np.array(column, dtype=float) for column in zip(*data, strict=True))
    options = EMOptions(max_iter=30, n_init=3, seed=seed, trace="params")
    first = run_em(CoinMixture(heads, tails, n_coins, fit_weights), options)
    second = run_em(CoinMixture(heads, tails, n_coins, fit_weights), options)
    assert first.trace == second.trace and first.restarts == second.restarts
    np.testing.assert_array_equal(first.log_resp, second.log_resp)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_same_seed_same_answer(model_name):
    first = run_em(MODELS[model_name](), EMOptions(n_init=3, seed=123, trace="params"))
    second = run_em(MODELS[model_name](), EMOptions(n_init=3, seed=123, trace="params"))
    assert first.trace == second.trace
    assert first.restarts == second.restarts
    np.testing.assert_array_equal(first.log_resp, second.log_resp)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_restart_seed_replays_that_start(model_name):
    outcome = run_em(MODELS[model_name](), EMOptions(n_init=4, seed=7, tol=1e-10, max_iter=300))
    for restart in outcome.restarts:
        alone = run_em(MODELS[model_name](), EMOptions(n_init=1, seed=restart.seed, tol=1e-10, max_iter=300))
        assert alone.log_likelihood == restart.log_likelihood
        assert alone.n_iter == restart.n_iter


def test_start_seeds_begin_with_the_given_seed_and_are_distinct():
    seeds = start_seeds(99, 5)
    assert seeds[0] == 99 and len(set(seeds)) == 5
    assert start_seeds(99, 5) == seeds


def test_different_seeds_explore_different_starts():
    lls = {run_em(_gaussian_model(), EMOptions(max_iter=2, tol=0, seed=s)).log_likelihood for s in range(5)}
    assert len(lls) > 1


def test_trace_params_follow_the_returned_component_order():
    outcome = run_em(_gaussian_model(), EMOptions(trace="params", seed=1, max_iter=200))
    last = outcome.trace[-1].params
    np.testing.assert_array_equal(last["means"], outcome.params.means.tolist())
    means = np.array(last["means"])
    assert [tuple(m) for m in means] == sorted(tuple(m) for m in means)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_stopping_at_max_iter_before_converging_is_a_warning(model_name):
    outcome = run_em(MODELS[model_name](), EMOptions(max_iter=2, tol=1e-12, seed=0))
    assert outcome.stop_reason == "max_iter"
    [warning] = [w for w in outcome.warnings if "without converging" in w]
    assert "max_iter = 2" in warning and "tol = 1e-12" in warning
    assert f"({abs(outcome.trace[-1].delta):.3g})" in warning  # the change that was still too large
    # Asked for a fixed number of iterations (tol = 0), or converged: nothing to warn about.
    assert run_em(MODELS[model_name](), EMOptions(max_iter=2, tol=0, seed=0)).warnings == []
    converged = run_em(MODELS[model_name](), EMOptions(max_iter=1000, tol=1e-3, seed=0))
    assert converged.converged and converged.warnings == []


def test_trace_none_records_nothing_but_counts_iterations():
    outcome = run_em(_coin_model(), EMOptions(trace="none", max_iter=5, tol=0))
    assert outcome.trace == [] and outcome.n_iter == 5


class _CancelAfter(Hooks):
    def __init__(self, iterations: int) -> None:
        self.seen: list[int] = []
        self.iterations = iterations

    def on_iteration(self, start: int, iteration: int, log_likelihood: float, delta: float) -> None:
        self.seen.append(iteration)

    def should_cancel(self) -> bool:
        return len(self.seen) >= self.iterations


def test_cancel_stops_with_a_consistent_state():
    hooks = _CancelAfter(3)
    outcome = run_em(_gaussian_model(), EMOptions(max_iter=100, tol=0, n_init=3, seed=0), hooks)
    assert outcome.stop_reason == "cancelled" and not outcome.converged
    assert outcome.n_iter == 3 and hooks.seen == [1, 2, 3]
    assert len(outcome.restarts) == 1


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_time_limit_stops_and_returns_current_state(model_name):
    # A budget far below one iteration: whatever the machine's speed, the fit stops on time, not at max_iter.
    model = MODELS[model_name]()
    outcome = run_em(model, EMOptions(max_iter=10_000, tol=0, n_init=3, time_limit_s=1e-9, seed=0))
    assert outcome.stop_reason == "time_limit" and not outcome.converged
    assert outcome.n_iter < 10_000 and len(outcome.trace) == outcome.n_iter
    assert len(outcome.restarts) == 1  # later starts are skipped once time is up
    # The state is the returned parameters' own: their log-likelihood and responsibilities.
    recomputed, _ = model.e_step(outcome.params)
    assert recomputed == pytest.approx(outcome.log_likelihood, rel=1e-12)
    np.testing.assert_allclose(outcome.log_resp, model.log_responsibilities(outcome.params), rtol=1e-12)


class _Clock:
    """A stand-in for ``time`` in the driver: a second passes with every iteration, none otherwise."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class _Tick(Hooks):
    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def on_iteration(self, start: int, iteration: int, log_likelihood: float, delta: float) -> None:
        self.clock.now += 1.0


@pytest.mark.parametrize("budget_s", [0.5, 1.0, 2.5, 7.0])
def test_time_limit_stops_at_the_first_iteration_that_starts_past_it(monkeypatch, budget_s):
    import service.em.loop as loop

    clock = _Clock()
    monkeypatch.setattr(loop, "time", clock)
    outcome = run_em(_coin_model(), EMOptions(max_iter=100, tol=0, time_limit_s=budget_s, seed=0), _Tick(clock))
    # An iteration runs whenever it starts before the deadline: ceil(budget) of them at one second each.
    assert outcome.n_iter == math.ceil(budget_s)
    assert outcome.stop_reason == "time_limit"
    assert outcome.elapsed_s == outcome.n_iter


def test_each_start_draws_from_its_seeds_generator_built_only_when_drawn_from(monkeypatch):
    import service.em.loop as loop

    built: list[int] = []
    default_rng = np.random.default_rng

    def counting_rng(seed: int) -> np.random.Generator:
        built.append(seed)
        return default_rng(seed)

    monkeypatch.setattr(loop.np.random, "default_rng", counting_rng)
    heads = np.array([5.0, 9.0, 8.0, 4.0, 7.0])
    # Given biases: nothing is drawn, so no Generator is built.
    run_em(CoinMixture(heads, 10 - heads, 2, biases=np.array([0.6, 0.5])), EMOptions(seed=7))
    assert built == []
    # Seeded starts: each start's draws are those of default_rng(its seed), as if built up front.
    drawn = CoinMixture(heads, 10 - heads, 2).initialize(default_rng(7)).biases
    run_em(CoinMixture(heads, 10 - heads, 2), EMOptions(seed=7, max_iter=1, tol=0, canonical_order=False))
    assert built == [7]
    replayed = CoinMixture(heads, 10 - heads, 2).initialize(loop._GeneratorOnFirstUse(7))  # type: ignore[arg-type]
    np.testing.assert_array_equal(replayed.biases, drawn)
