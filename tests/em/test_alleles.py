"""Allele frequencies by gene counting against published numbers, a direct maximisation, and EM's laws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from service.em.alleles import AlleleModel, check_frequencies, genetics_of, sample
from service.em.errors import EMError
from service.em.loop import EMOptions, run_em

MOTH_ALLELES = ["C", "I", "T"]
MOTH_PHENOTYPES = [[("C", "C"), ("C", "I"), ("C", "T")], [("I", "I"), ("I", "T")], [("T", "T")]]
MOTH_COUNTS = np.array([85.0, 196.0, 341.0])

ABO_ALLELES = ["A", "B", "O"]
ABO_PHENOTYPES = [[("A", "A"), ("A", "O")], [("B", "B"), ("B", "O")], [("A", "B")], [("O", "O")]]
ABO_COUNTS = np.array([186.0, 38.0, 13.0, 284.0])


def _fit(alleles, phenotypes, counts, **options):
    model = AlleleModel(genetics_of(alleles, phenotypes, "phenotypes"), counts, options.pop("init", None))
    return model, run_em(model, EMOptions(**options))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_peppered_moth_reaches_the_published_estimate(seed):
    _, outcome = _fit(MOTH_ALLELES, MOTH_PHENOTYPES, MOTH_COUNTS, seed=seed, tol=1e-12, max_iter=500)
    np.testing.assert_allclose(outcome.params.frequencies, [0.07084, 0.18874, 0.74043], atol=1e-4)
    assert outcome.converged


def _direct_maximum(alleles, phenotypes, counts):
    """The observed-data multinomial log-likelihood maximised over the simplex (softmax coordinates), by BFGS."""
    genetics = genetics_of(alleles, phenotypes, "phenotypes")

    def negative_log_likelihood(z):
        p = np.exp(z - z.max())
        p /= p.sum()
        return -np.sum(counts * np.log(genetics.phenotype_probabilities(p, len(counts))))

    best = minimize(negative_log_likelihood, np.zeros(len(alleles)), method="BFGS", options={"gtol": 1e-12})
    p = np.exp(best.x - best.x.max())
    return p / p.sum(), -best.fun


def test_abo_estimate_equals_a_direct_maximisation_of_the_likelihood():
    _, outcome = _fit(ABO_ALLELES, ABO_PHENOTYPES, ABO_COUNTS, seed=0, tol=0, max_iter=2000)
    frequencies, log_likelihood = _direct_maximum(ABO_ALLELES, ABO_PHENOTYPES, ABO_COUNTS)
    np.testing.assert_allclose(outcome.params.frequencies, frequencies, atol=1e-6)
    assert outcome.log_likelihood == pytest.approx(log_likelihood, rel=1e-10)


def test_moth_log_likelihood_is_the_multinomial_one_without_its_coefficient():
    _, outcome = _fit(MOTH_ALLELES, MOTH_PHENOTYPES, MOTH_COUNTS, init=np.array([0.2, 0.3, 0.5]), max_iter=3)
    p_c, p_i, p_t = outcome.params.frequencies
    carbonaria = p_c**2 + 2 * p_c * p_i + 2 * p_c * p_t
    insularia = p_i**2 + 2 * p_i * p_t
    typica = p_t**2
    expected = 85 * np.log(carbonaria) + 196 * np.log(insularia) + 341 * np.log(typica)
    assert outcome.log_likelihood == pytest.approx(expected, rel=1e-12)


@st.composite
def _problems(draw):
    """Alleles, a random partition of their genotypes into phenotypes, and counts."""
    n_alleles = draw(st.integers(2, 4))
    alleles = [f"a{i}" for i in range(n_alleles)]
    genotypes = [(alleles[i], alleles[j]) for i in range(n_alleles) for j in range(i, n_alleles)]
    labels = draw(st.lists(st.integers(0, len(genotypes) - 1), min_size=len(genotypes), max_size=len(genotypes)))
    used = sorted(set(labels))
    phenotypes = [[g for g, label in zip(genotypes, labels, strict=True) if label == u] for u in used]
    counts = draw(st.lists(st.integers(0, 500), min_size=len(phenotypes), max_size=len(phenotypes)))
    if sum(counts) == 0:
        counts[0] = 1
    return alleles, phenotypes, np.array(counts, dtype=np.float64), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(_problems())
def test_log_likelihood_never_decreases(problem):
    alleles, phenotypes, counts, seed = problem
    _, outcome = _fit(alleles, phenotypes, counts, seed=seed, tol=0, max_iter=40)
    trace = [entry.log_likelihood for entry in outcome.trace]
    steps = np.diff(trace)
    # Each step's rounding: a few ulps of every phenotype's term.
    assert np.all(steps >= -1e-12 * (np.abs(trace[1:]) + counts.sum())), steps.min()
    assert np.isclose(outcome.params.frequencies.sum(), 1.0, rtol=0, atol=1e-12)


def test_same_seed_same_answer_and_restarts_replay():
    _, first = _fit(ABO_ALLELES, ABO_PHENOTYPES, ABO_COUNTS, seed=7, n_init=4, max_iter=5, tol=0)
    _, again = _fit(ABO_ALLELES, ABO_PHENOTYPES, ABO_COUNTS, seed=7, n_init=4, max_iter=5, tol=0)
    np.testing.assert_array_equal(first.params.frequencies, again.params.frequencies)
    returned = first.restarts[first.returned_start]
    _, alone = _fit(ABO_ALLELES, ABO_PHENOTYPES, ABO_COUNTS, seed=returned.seed, max_iter=5, tol=0)
    np.testing.assert_array_equal(alone.params.frequencies, first.params.frequencies)


def test_posteriors_split_each_phenotype_over_its_genotypes_by_their_probabilities():
    _, outcome = _fit(MOTH_ALLELES, MOTH_PHENOTYPES, MOTH_COUNTS, seed=0, tol=1e-12, max_iter=500)
    posterior = np.exp(outcome.log_resp)
    np.testing.assert_allclose(posterior.sum(axis=1), 1.0, rtol=1e-12)
    p_c, p_i, p_t = outcome.params.frequencies
    carbonaria = np.array([p_c**2, 2 * p_c * p_i, 2 * p_c * p_t])
    np.testing.assert_allclose(posterior[0, :3], carbonaria / carbonaria.sum(), rtol=1e-12)
    assert np.all(posterior[0, 3:] == 0)


def test_an_allele_no_phenotype_needs_goes_to_zero_with_a_warning():
    # Only O/O individuals observed: A and B are not needed.
    _, outcome = _fit(ABO_ALLELES, ABO_PHENOTYPES, np.array([0.0, 0.0, 0.0, 50.0]), seed=0, tol=1e-12, max_iter=2000)
    assert outcome.params.frequencies[2] == pytest.approx(1.0, abs=1e-6)
    assert any("A, B went to frequency 0" in w for w in outcome.warnings)


def test_sampled_phenotype_shares_follow_the_model():
    genetics = genetics_of(MOTH_ALLELES, MOTH_PHENOTYPES, "phenotypes")
    p = np.array([0.07084, 0.18874, 0.74043])
    p /= p.sum()
    n = 200_000
    genotypes, phenotypes = sample(genetics, p, n, np.random.default_rng(3))
    expected = genetics.phenotype_probabilities(p, 3)
    shares = np.bincount(phenotypes, minlength=3) / n
    # Each share within 5 binomial standard deviations.
    assert np.all(np.abs(shares - expected) <= 5 * np.sqrt(expected * (1 - expected) / n))
    assert np.all(genetics.phenotype_of_genotype[genotypes] == phenotypes)


@pytest.mark.parametrize(
    ("alleles", "phenotypes", "says"),
    [
        (MOTH_ALLELES, [*MOTH_PHENOTYPES[:2], [("T", "X")]], "names allele 'X', which is not in alleles"),
        (MOTH_ALLELES, [*MOTH_PHENOTYPES, [("I", "C")]], "genotype I/C is also in phenotypes\\[0\\]"),
        (MOTH_ALLELES, [[("C", "C"), ("C", "C")], *MOTH_PHENOTYPES[1:]], "named twice in this phenotype"),
        (MOTH_ALLELES, MOTH_PHENOTYPES[:2], "genotype T/T is in no phenotype"),
        (MOTH_ALLELES, [[], *MOTH_PHENOTYPES], "lists no genotypes"),
        (["C", "C"], [[("C", "C")]], "more than once"),
    ],
)
def test_phenotypes_that_do_not_partition_the_genotypes_are_refused(alleles, phenotypes, says):
    with pytest.raises(EMError, match=says):
        genetics_of(alleles, phenotypes, "phenotypes")


def test_unusable_starts_are_refused():
    genetics = genetics_of(MOTH_ALLELES, MOTH_PHENOTYPES, "phenotypes")
    with pytest.raises(EMError, match=r"sums to 0\.9"):
        check_frequencies([0.3, 0.3, 0.3], 3, "init.frequencies")
    with pytest.raises(EMError, match="probability 0, but it was observed 341 times"):
        AlleleModel(genetics, MOTH_COUNTS, np.array([0.5, 0.5, 0.0]))
    with pytest.raises(EMError, match="every phenotype count is 0"):
        AlleleModel(genetics, np.zeros(3))
