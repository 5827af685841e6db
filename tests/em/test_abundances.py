"""Transcript abundances against closed forms, scipy's direct maximisation, kallisto 0.48, and EM's laws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from service.em.abundances import AbundanceParams, TranscriptAbundances, incidence_matrix
from service.em.abundances_use import AbundanceModel
from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.loop import EMOptions, run_em
from service.em.use import predict

KALLISTO = json.loads((Path(__file__).parents[1] / "reference" / "kallisto_abundances.json").read_text())
# Run to max_iter: a stop on the log-likelihood leaves parameters sqrt(tol) away, as it is flat at the top.
TIGHT = EMOptions(max_iter=5000, tol=0)


def _model(classes, counts, lengths, **kwargs) -> TranscriptAbundances:
    matrix = incidence_matrix(classes, len(lengths))
    return TranscriptAbundances(np.asarray(lengths, float), matrix, np.asarray(counts, float), **kwargs)


def _log_likelihood(rho, classes, counts, lengths) -> float:
    """The API's definition, written out class by class."""
    rho, lengths = np.asarray(rho), np.asarray(lengths, float)
    return float(sum(n * np.log(sum(rho[t] / lengths[t] for t in c)) for c, n in zip(classes, counts, strict=True)))


def _two_targets_sharing(n_a, n_b, n_ab, length_a, length_b) -> float:
    """rho_a of the MLE with classes {a}: n_a, {b}: n_b, {a, b}: n_ab, by hand.

    With u = 1/l_a, v = 1/l_b, d = u - v and x = rho_a, the stationarity condition
    n_a / x - n_b / (1 - x) + n_ab d / (v + d x) = 0, times x (1 - x)(v + d x), is the quadratic
    -N d x^2 + ((n_a + n_ab) d - (n_a + n_b) v) x + n_a v = 0 (N = n_a + n_b + n_ab), whose root in (0, 1) is x.
    """
    u, v = 1.0 / length_a, 1.0 / length_b
    d, total = u - v, n_a + n_b + n_ab
    a, b, c = -total * d, (n_a + n_ab) * d - (n_a + n_b) * v, n_a * v
    if a == 0:
        return -c / b
    roots = np.roots([a, b, c]).real
    return float(next(r for r in roots if 0 < r < 1))


# --- closed forms ---


def test_disjoint_classes_give_rho_proportional_to_counts():
    counts, lengths = [30, 50, 20], [1000.0, 250.0, 4000.0]
    model = _model([[0], [1], [2]], counts, lengths)
    outcome = run_em(model, EMOptions(max_iter=5, tol=0))
    np.testing.assert_allclose(outcome.params.rho, np.array(counts) / 100, rtol=1e-15)
    expected = sum(n * np.log(n / 100 / length) for n, length in zip(counts, lengths, strict=True))
    assert outcome.log_likelihood == pytest.approx(expected, rel=1e-14)
    result = model.to_dict(outcome.params)
    np.testing.assert_allclose(result["est_counts"], counts, rtol=1e-14)
    per_base = np.array(counts) / np.array(lengths)
    np.testing.assert_allclose(result["tpm"], 1e6 * per_base / per_base.sum(), rtol=1e-14)


@pytest.mark.parametrize(
    ("n_a", "n_b", "n_ab", "length_a", "length_b"),
    [(40, 60, 100, 1000.0, 1000.0), (120, 80, 300, 1500.0, 900.0), (5, 200, 1000, 300.0, 3000.0)],
)
def test_two_targets_sharing_a_class_match_the_hand_derived_mle(n_a, n_b, n_ab, length_a, length_b):
    model = _model([[0], [1], [0, 1]], [n_a, n_b, n_ab], [length_a, length_b])
    outcome = run_em(model, TIGHT)
    x = _two_targets_sharing(n_a, n_b, n_ab, length_a, length_b)
    np.testing.assert_allclose(outcome.params.rho, [x, 1 - x], atol=1e-9)


def test_equal_lengths_split_the_shared_class_as_the_unique_ones():
    x = _two_targets_sharing(40, 60, 100, 700.0, 700.0)
    assert x == pytest.approx(0.4, abs=1e-15)


def test_the_api_example_gives_t3_nothing_and_splits_t1_t2_by_hand():
    # t3 is seen only with the shorter t2: at the maximum rho_3 = 0 (its KKT gradient, 80 l_2 / (l_3 rho_2) = 62.5,
    # is below N = 500), and then {t2, t3} counts as {t2}: the two-target closed form with n_b = 80.
    model = _model([[0], [0, 1], [1, 2]], [120, 300, 80], [1500.0, 900.0, 2000.0])
    outcome = run_em(model, TIGHT)
    x = _two_targets_sharing(120, 80, 300, 1500.0, 900.0)
    np.testing.assert_allclose(outcome.params.rho, [x, 1 - x, 0.0], atol=1e-9)


# --- scipy's direct maximisation ---


def _direct_maximum(classes, counts, lengths) -> np.ndarray:
    """argmax of the log-likelihood over the simplex by BFGS on softmax coordinates (z_0 = 0), analytic gradient."""
    matrix = incidence_matrix(classes, len(lengths)).toarray()
    counts, inverse = np.asarray(counts, float), 1.0 / np.asarray(lengths, float)

    def rho_of(z):
        full = np.concatenate([[0.0], z])
        e = np.exp(full - full.max())
        return e / e.sum()

    def negative(z):
        rho = rho_of(z)
        q = matrix @ (rho * inverse)
        gradient_rho = inverse * (matrix.T @ (counts / q))
        gradient_z = rho * (gradient_rho - rho @ gradient_rho)
        return -counts @ np.log(q), -gradient_z[1:]

    fit = optimize.minimize(negative, np.zeros(len(lengths) - 1), jac=True, method="BFGS", options={"gtol": 1e-11})
    return rho_of(fit.x)


@pytest.mark.parametrize("seed", range(6))
def test_em_equals_direct_maximisation_on_random_instances(seed):
    rng = np.random.default_rng(seed)
    n_targets = int(rng.integers(3, 7))
    lengths = rng.uniform(200, 3000, n_targets)
    # A class of its own for every target keeps the maximum unique and inside the simplex, where BFGS can reach it.
    classes = [[t] for t in range(n_targets)]
    for _ in range(int(rng.integers(2, 8))):
        size = int(rng.integers(2, n_targets + 1))
        classes.append(sorted(rng.choice(n_targets, size=size, replace=False).tolist()))
    counts = rng.integers(1, 500, len(classes))
    outcome = run_em(_model(classes, counts, lengths), TIGHT)
    direct = _direct_maximum(classes, counts, lengths)
    np.testing.assert_allclose(outcome.params.rho, direct, atol=1e-6)
    assert outcome.log_likelihood >= _log_likelihood(direct, classes, counts, lengths) - 1e-9 * abs(
        outcome.log_likelihood
    )


def test_log_likelihood_is_the_api_definition():
    classes, counts, lengths = [[0], [0, 1], [1, 2]], [120, 300, 80], [1500.0, 900.0, 2000.0]
    model = _model(classes, counts, lengths)
    rho = np.array([0.2, 0.5, 0.3])
    assert model.e_step(AbundanceParams(rho))[0] == pytest.approx(_log_likelihood(rho, classes, counts, lengths))


# --- EM's laws ---


@st.composite
def _instances(draw):
    n_targets = draw(st.integers(1, 6))
    classes = draw(st.lists(st.sets(st.integers(0, n_targets - 1), min_size=1).map(sorted), min_size=1, max_size=10))
    counts = draw(st.lists(st.integers(0, 10**6), min_size=len(classes), max_size=len(classes)))
    lengths = draw(st.lists(st.floats(1.0, 1e5), min_size=n_targets, max_size=n_targets))
    return classes, counts, lengths


@settings(max_examples=150, deadline=None)
@given(_instances())
def test_log_likelihood_never_decreases(instance):
    classes, counts, lengths = instance
    if sum(counts) == 0:
        return
    model = _model(classes, counts, lengths)
    outcome = run_em(model, EMOptions(max_iter=60, tol=0))
    trace = np.array([entry.log_likelihood for entry in outcome.trace])
    # Each class's term is rounded on its own: allow a few ulps of the sum of their sizes.
    slack = 1e-12 * (np.sum(np.abs(np.log(np.asarray(lengths)))) + 1) * sum(counts)
    assert np.all(np.diff(trace) >= -slack)
    assert np.isclose(outcome.params.rho.sum(), 1.0)


def test_same_seed_same_answer_with_random_starts():
    args = ([[0], [0, 1], [1, 2], [2, 3], [3]], [10, 40, 25, 7, 3], [900.0, 900.0, 1500.0, 400.0])
    options = EMOptions(max_iter=50, tol=1e-8, n_init=4, seed=123)
    first = run_em(_model(*args, random_starts=True), options)
    second = run_em(_model(*args, random_starts=True), options)
    np.testing.assert_array_equal(first.params.rho, second.params.rho)
    assert [r.seed for r in first.restarts] == [r.seed for r in second.restarts]
    # A random start replays alone from its seed.
    start = first.restarts[2]
    replay = run_em(_model(*args, random_starts=True), EMOptions(max_iter=50, tol=1e-8, seed=start.seed))
    assert replay.log_likelihood == start.log_likelihood


def test_uniform_is_the_default_start():
    model = _model([[0], [0, 1]], [3, 5], [100.0, 200.0])
    np.testing.assert_array_equal(model.initialize(np.random.default_rng(0)).rho, [0.5, 0.5])


# --- warnings and refusals ---


def test_targets_without_reads_get_zero_and_a_warning():
    model = _model([[0], [0, 1], [2]], [10, 5, 0], [100.0, 100.0, 100.0], names=["a", "b", "c"])
    outcome = run_em(model, TIGHT)
    assert outcome.params.rho[2] == 0
    assert any("'c'" in w and "abundance is 0" in w for w in outcome.warnings)


def test_targets_always_seen_together_with_equal_lengths_warn_and_keep_the_uniform_split():
    model = _model([[0, 1], [0, 1, 2], [2]], [50, 30, 20], [500.0, 500.0, 800.0], names=["a", "b", "c"])
    outcome = run_em(model, TIGHT)
    assert outcome.params.rho[0] == pytest.approx(outcome.params.rho[1], rel=1e-12)
    assert any("'a', 'b'" in w and "not" in w for w in outcome.warnings)


def test_targets_always_seen_together_with_different_lengths_name_the_shortest():
    model = _model([[0, 1]], [50], [500.0, 300.0], names=["long", "short"])
    outcome = run_em(model, EMOptions(max_iter=200, tol=0))
    assert outcome.params.rho[1] > 0.99  # the maximum is all on the shorter one
    assert any("shortest ('short')" in w for w in outcome.warnings)


def test_a_rank_deficient_design_warns_without_failing():
    # {a,b}, {b,c}, {a,c}... plus {a}, {c}: identifiable. {a,b}, {c,d}, {a,d}, {b,c} with equal lengths: the
    # direction (+1, -1, +1, -1) changes no class's probability nor the total.
    model = _model([[0, 1], [2, 3], [0, 3], [1, 2]], [10, 20, 30, 40], [100.0] * 4)
    outcome = run_em(model, TIGHT)
    assert any("cannot tell the targets apart" in w for w in outcome.warnings)


def test_refusals_name_the_field():
    with pytest.raises(DegenerateDataError, match="no reads"):
        _model([[0]], [0], [100.0])
    with pytest.raises(InvalidParameterError, match="names a target twice"):
        _model([[0, 0]], [1], [100.0])
    with pytest.raises(InvalidParameterError, match="length"):
        _model([[0]], [1], [0.0])
    with pytest.raises(InvalidParameterError, match="sum to 1") as error:
        _model([[0], [1]], [1, 1], [1.0, 1.0], init_rho=np.array([0.5, 0.6]))
    assert error.value.field == "init.rho"
    with pytest.raises(InvalidParameterError, match="impossible"):
        _model([[0], [1]], [1, 1], [1.0, 1.0], init_rho=np.array([1.0, 0.0]))


# --- kallisto 0.48 (tests/reference/kallisto_abundances.json, made by kallisto_abundances.py) ---


def _kallisto_model() -> tuple[TranscriptAbundances, np.ndarray]:
    names = [t["name"] for t in KALLISTO["targets"]]
    index = {name: t for t, name in enumerate(names)}
    classes = [[index[name] for name in c["targets"]] for c in KALLISTO["classes"]]
    lengths = [t["eff_length"] for t in KALLISTO["targets"]]
    model = _model(classes, [c["count"] for c in KALLISTO["classes"]], lengths, names=names)
    return model, np.array(KALLISTO["est_counts"])


def test_kallisto_iterates_are_ours_step_for_step():
    # kallisto 0.48 starts uniform, weights each target of a class by 1 / eff_length, and says "ran for 52
    # rounds" then runs its final round: 53 EM steps. Ours from the same start match its est_counts and tpm to
    # the 6 significant digits abundance.tsv prints (a wrong weight or start is off by percents here: gene A's
    # isoforms are still moving by ~0.15% a step at round 53).
    model, kallisto = _kallisto_model()
    outcome = run_em(model, EMOptions(max_iter=53, tol=0))
    ours = model.to_dict(outcome.params)
    np.testing.assert_allclose(ours["est_counts"], kallisto, rtol=1e-5)
    np.testing.assert_allclose(ours["tpm"], KALLISTO["tpm"], rtol=1e-5)
    assert model.n_reads == pytest.approx(kallisto.sum(), abs=0.05)  # every read pseudoaligned (--single-overhang)


def test_our_converged_fit_is_at_least_as_likely_as_kallistos():
    # kallisto stops once every alpha above 0.01 reads moved by under 1% in a round: with gene A's isoforms
    # converging slowly (the step shrinks ~5% a round), that leaves them ~3% from the maximum, so est_counts
    # can only be compared loosely; the log-likelihood must be at least kallisto's, and (being flat at the top)
    # within a small amount per read. Zeroing alphas below 1e-7 moves at most 6 x 1e-7 reads: negligible here.
    model, kallisto = _kallisto_model()
    outcome = run_em(model, TIGHT)
    theirs = model.e_step(AbundanceParams(kallisto / kallisto.sum()))[0]
    assert outcome.log_likelihood >= theirs
    assert (outcome.log_likelihood - theirs) / model.n_reads < 1e-4
    np.testing.assert_allclose(model.to_dict(outcome.params)["est_counts"], kallisto, rtol=0.05)
    # Genes B and C converge in a few rounds: there kallisto's stop is tight.
    np.testing.assert_allclose(model.to_dict(outcome.params)["est_counts"][3:], kallisto[3:], rtol=1e-5)


# --- the kept model ---


def test_kept_model_predicts_the_split_of_each_class():
    model = AbundanceModel.of(["a", "b", "c"], [1000.0, 500.0, 250.0], [0.5, 0.3, 0.2])
    incidence = incidence_matrix([[0, 1], [2], [0, 1, 2]], 3)
    outcome = predict(model.log_joint(incidence))
    weight = np.array([0.5 / 1000, 0.3 / 500, 0.2 / 250])
    np.testing.assert_allclose(outcome.responsibilities[0], [*(weight[:2] / weight[:2].sum()), 0.0], rtol=1e-12)
    np.testing.assert_allclose(outcome.responsibilities[2], weight / weight.sum(), rtol=1e-12)
    np.testing.assert_allclose(outcome.log_likelihood, np.log([weight[:2].sum(), weight[2], weight.sum()]))
    assert outcome.labels.tolist() == [1, 2, 2]


def test_kept_model_samples_reads_in_proportion_to_rho():
    model = AbundanceModel.of(["a", "b", "c"], [1000.0, 500.0, 250.0], [0.5, 0.3, 0.2])
    labels = model.sample(200_000, seed=4)
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / 200_000, [0.5, 0.3, 0.2], atol=0.005)
    np.testing.assert_array_equal(labels[:100], model.sample(100, seed=4))


def test_kept_model_refuses_unusable_parameters():
    with pytest.raises(InvalidParameterError, match="sum to 1"):
        AbundanceModel.of(["a", "b"], [1.0, 1.0], [0.5, 0.6])
    with pytest.raises(InvalidParameterError, match="twice"):
        AbundanceModel.of(["a", "a"], [1.0, 1.0], [0.5, 0.5])
    with pytest.raises(InvalidParameterError, match=r"params\.lengths"):
        AbundanceModel.of(["a", "b"], [1.0], [0.5, 0.5])
