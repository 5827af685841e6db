"""Allele frequencies from phenotype counts (gene counting): the peppered moth, ABO blood groups.

Genotypes are hidden; phenotypes are counted, and each phenotype is a set of genotypes. Under
Hardy-Weinberg equilibrium an unordered genotype {i, j} has probability 2 p_i p_j (i != j) or p_i^2, so a
phenotype's probability is the sum over its genotypes. EM splits each phenotype's count over its genotypes in
proportion to their probabilities (E-step) and counts alleles in the expected genotypes (M-step):
p_a = (expected copies of allele a) / 2N. The log-likelihood is the multinomial's without its coefficient,
sum_f n_f log P(f).

The phenotypes must partition the genotypes (each genotype in exactly one phenotype): their probabilities then
sum to 1 and the counts are one multinomial sample. The arithmetic is a handful of numpy calls on arrays of
G = A(A+1)/2 genotypes, whatever the counts: a fit is microseconds an iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.information import Reported, Uncertainty, covariance_of_estimates, simplex_map

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

# A frequency below this, at the returned parameters, is reported: no phenotype's count needs the allele.
_VANISHED = 1e-8


@dataclass(frozen=True)
class AlleleParams:
    frequencies: FloatArray  # (A,), summing to 1


@dataclass(frozen=True)
class AlleleStatistics:
    allele_copies: FloatArray  # (A,) expected copies of each allele among the 2N genes


class Genetics:
    """Alleles, the unordered genotypes they form, and which phenotype shows each genotype.

    Genotype g = {first[g], second[g]}, listed as (0,0), (0,1), ..., (0,A-1), (1,1), ...: upper-triangle order.
    """

    def __init__(self, alleles: list[str], phenotype_of_genotype: IntArray) -> None:
        self.alleles = alleles
        first, second = np.triu_indices(len(alleles))
        self.first, self.second = first.astype(np.intp), second.astype(np.intp)
        self.phenotype_of_genotype = phenotype_of_genotype
        # Hardy-Weinberg: a heterozygote arises two ways.
        self.multiplicity = np.where(self.first == self.second, 1.0, 2.0)
        # Copies of each allele in each genotype (G x A): 2 for a homozygote, 1 and 1 for a heterozygote.
        copies = np.zeros((len(first), len(alleles)))
        np.add.at(copies, (np.arange(len(first)), self.first), 1.0)
        np.add.at(copies, (np.arange(len(first)), self.second), 1.0)
        self.copies = copies

    @property
    def n_genotypes(self) -> int:
        return len(self.first)

    def genotype_names(self) -> list[str]:
        return [f"{self.alleles[i]}/{self.alleles[j]}" for i, j in zip(self.first, self.second, strict=True)]

    def genotype_probabilities(self, frequencies: FloatArray) -> FloatArray:
        probabilities: FloatArray = self.multiplicity * frequencies[self.first] * frequencies[self.second]
        return probabilities

    def phenotype_probabilities(self, frequencies: FloatArray, n_phenotypes: int) -> FloatArray:
        genotypes = self.genotype_probabilities(frequencies)
        return np.bincount(self.phenotype_of_genotype, weights=genotypes, minlength=n_phenotypes).astype(np.float64)


def genetics_of(alleles: list[str], phenotype_genotypes: list[list[tuple[str, str]]], field: str) -> Genetics:
    """Check that ``phenotype_genotypes`` partition the genotypes of ``alleles`` and index them.

    ``field`` is where the phenotypes came from in the request (``"phenotypes"``), for the 422's location.
    """
    if len(alleles) < 1:
        raise InvalidParameterError("alleles must name at least one allele", "alleles")
    if len(set(alleles)) != len(alleles):
        twice = sorted({a for a in alleles if alleles.count(a) > 1})
        raise InvalidParameterError(f"alleles names {', '.join(map(repr, twice))} more than once", "alleles")
    index = {name: i for i, name in enumerate(alleles)}
    n_alleles = len(alleles)
    # Upper-triangle position of the unordered pair {i, j}, i <= j.
    upper, lower = np.triu_indices(n_alleles)
    position = {(int(i), int(j)): g for g, (i, j) in enumerate(zip(upper, lower, strict=True))}
    phenotype_of = np.full(len(position), -1, dtype=np.intp)
    for f, genotypes in enumerate(phenotype_genotypes):
        if not genotypes:
            raise InvalidParameterError(f"{field}[{f}] lists no genotypes", f"{field}.{f}.genotypes")
        for k, (a, b) in enumerate(genotypes):
            where = f"{field}.{f}.genotypes.{k}"
            unknown = [x for x in (a, b) if x not in index]
            if unknown:
                raise InvalidParameterError(
                    f"{field}[{f}].genotypes[{k}] names allele {unknown[0]!r}, which is not in alleles "
                    f"({', '.join(alleles)})",
                    where,
                )
            i, j = sorted((index[a], index[b]))
            g = position[(i, j)]
            if phenotype_of[g] >= 0:
                shown = (
                    "named twice in this phenotype" if phenotype_of[g] == f else f"also in {field}[{phenotype_of[g]}]"
                )
                raise InvalidParameterError(
                    f"genotype {a}/{b} is {shown}; each genotype belongs to exactly one phenotype", where
                )
            phenotype_of[g] = f
    missing = np.flatnonzero(phenotype_of < 0)
    if missing.size:
        first, second = np.triu_indices(n_alleles)
        names = [f"{alleles[first[g]]}/{alleles[second[g]]}" for g in missing[:5]]
        more = f" (and {missing.size - 5} more)" if missing.size > 5 else ""
        raise InvalidParameterError(
            f"genotype{'s' if missing.size > 1 else ''} {', '.join(names)}{more} "
            f"{'are' if missing.size > 1 else 'is'} in no phenotype; the phenotypes must cover every genotype "
            "of the alleles (each in exactly one), so that their probabilities sum to 1",
            field,
        )
    return Genetics(list(alleles), phenotype_of)


def check_frequencies(frequencies: Any, n_alleles: int, field: str) -> FloatArray:
    """Frequencies of ``n_alleles`` alleles: finite, >= 0, summing to 1 (to 1e-6, then renormalised)."""
    p = np.asarray(frequencies, dtype=np.float64)
    if p.shape != (n_alleles,):
        raise InvalidParameterError(f"{field} has {p.size} values, expected one per allele ({n_alleles})", field)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InvalidParameterError(f"{field} must be finite numbers >= 0", field)
    total = float(p.sum())
    if abs(total - 1.0) > 1e-6:
        raise InvalidParameterError(f"{field} sums to {total:.8g}; allele frequencies must sum to 1", field)
    return p / total


class AlleleModel:
    """Gene counting over phenotype counts; fills the hooks of :class:`service.em.loop.EMModel`.

    ``log_responsibilities`` are each phenotype's posterior over the genotypes (phenotypes x genotypes).
    """

    def __init__(self, genetics: Genetics, counts: FloatArray, init_frequencies: FloatArray | None = None) -> None:
        self.genetics = genetics
        self.counts = np.asarray(counts, dtype=np.float64)
        self.n_phenotypes = len(self.counts)
        self.total = float(self.counts.sum())
        if not self.total > 0:
            raise DegenerateDataError("every phenotype count is 0; there is nothing to fit", "phenotypes")
        self.init_frequencies = init_frequencies
        if init_frequencies is not None:
            impossible = np.flatnonzero(
                (genetics.phenotype_probabilities(init_frequencies, self.n_phenotypes) <= 0) & (self.counts > 0)
            )
            if impossible.size:
                f = int(impossible[0])
                raise InvalidParameterError(
                    f"init.frequencies give phenotypes[{f}] probability 0, but it was observed "
                    f"{self.counts[f]:g} times; give its alleles a frequency above 0",
                    "init.frequencies",
                )

    @property
    def n_observations(self) -> int:
        return round(self.total)

    def initialize(self, rng: np.random.Generator) -> AlleleParams:
        """The given frequencies, or a uniform draw from the simplex (every allele above 0)."""
        if self.init_frequencies is not None:
            return AlleleParams(self.init_frequencies.copy())
        return AlleleParams(rng.dirichlet(np.ones(len(self.genetics.alleles))))

    def _posterior_counts(self, params: AlleleParams) -> tuple[float, FloatArray]:
        """Log-likelihood and the expected count of each genotype given the phenotype counts."""
        genetics = self.genetics
        genotypes = genetics.genotype_probabilities(params.frequencies)
        phenotypes = np.bincount(genetics.phenotype_of_genotype, weights=genotypes, minlength=self.n_phenotypes)
        observed = self.counts > 0
        with np.errstate(divide="ignore"):
            log_likelihood = float(np.sum(self.counts[observed] * np.log(phenotypes[observed])))
        # A phenotype of probability 0 with count 0 contributes nothing (and its genotypes no counts).
        share = np.divide(self.counts, phenotypes, out=np.zeros_like(phenotypes), where=phenotypes > 0)
        return log_likelihood, genotypes * share[genetics.phenotype_of_genotype]

    def e_step(self, params: AlleleParams) -> tuple[float, AlleleStatistics]:
        log_likelihood, expected_genotypes = self._posterior_counts(params)
        return log_likelihood, AlleleStatistics(expected_genotypes @ self.genetics.copies)

    def m_step(self, stats: AlleleStatistics, params: AlleleParams) -> tuple[AlleleParams, list[str]]:
        return AlleleParams(stats.allele_copies / (2.0 * self.total)), []

    def log_responsibilities(self, params: AlleleParams) -> FloatArray:
        """P(genotype | phenotype), phenotypes x genotypes, in log space (-inf outside the phenotype)."""
        return posterior_over_genotypes(self.genetics, params.frequencies, np.arange(self.n_phenotypes))

    def diagnose(self, params: AlleleParams) -> list[str]:
        vanished = [a for a, p in zip(self.genetics.alleles, params.frequencies, strict=True) if p < _VANISHED]
        if not vanished:
            return []
        return [
            f"allele{'s' if len(vanished) > 1 else ''} {', '.join(vanished)} went to frequency 0: "
            "no observed phenotype needs them"
        ]

    def uncertainty(self, params: AlleleParams, converged: bool) -> tuple[Uncertainty, dict[str, Reported | None]]:
        """The frequencies' covariance from the exact Hessian of sum_f n_f log P(f), on the free frequencies
        (all but the last, which is 1 minus the others), and the reported frequencies as a map of those."""
        genetics, p = self.genetics, params.frequencies
        n_alleles = len(p)
        names = [f"frequencies[{a}]" for a in range(n_alleles - 1)]
        maps: dict[str, Reported | None] = {"frequencies": Reported(np.arange(n_alleles - 1), simplex_map(n_alleles))}
        if np.any(p <= 0):
            warning = "standard errors are not given: an allele's frequency is 0, on the boundary of the simplex"
            return Uncertainty(names, None, [warning]), maps
        # P(f) is quadratic in p: gradients and Hessians of each genotype's probability, summed per phenotype.
        n_genotypes, first, second = genetics.n_genotypes, genetics.first, genetics.second
        genotype_gradient = np.zeros((n_genotypes, n_alleles))
        genotype_hessian = np.zeros((n_genotypes, n_alleles, n_alleles))
        rows = np.arange(n_genotypes)
        multiplicity = genetics.multiplicity
        np.add.at(genotype_gradient, (rows, first), multiplicity * p[second])
        np.add.at(genotype_gradient, (rows, second), multiplicity * p[first])
        np.add.at(genotype_hessian, (rows, first, second), multiplicity)
        np.add.at(genotype_hessian, (rows, second, first), multiplicity)
        phenotype = genetics.phenotype_of_genotype
        gradient = np.zeros((self.n_phenotypes, n_alleles))
        hessian = np.zeros((self.n_phenotypes, n_alleles, n_alleles))
        np.add.at(gradient, phenotype, genotype_gradient)
        np.add.at(hessian, phenotype, genotype_hessian)
        probabilities = genetics.phenotype_probabilities(p, self.n_phenotypes)
        seen = self.counts > 0
        weights = self.counts[seen] / probabilities[seen]
        hessian_p = np.einsum("f,fab->ab", weights, hessian[seen]) - np.einsum(
            "f,fa,fb->ab", weights / probabilities[seen], gradient[seen], gradient[seen]
        )
        free = simplex_map(n_alleles)
        information = -(free.T @ hessian_p @ free)
        return covariance_of_estimates((information + information.T) / 2, names, converged), maps

    def canonical_order(self, params: AlleleParams) -> IntArray:
        return np.arange(len(self.genetics.alleles))  # alleles are named: the caller's order is the order

    def permute(self, params: AlleleParams, order: IntArray) -> AlleleParams:
        return params

    def to_dict(self, params: AlleleParams) -> dict[str, Any]:
        genotypes = self.genetics.genotype_probabilities(params.frequencies)
        return {
            "frequencies": params.frequencies,
            "genotype_frequencies": dict(zip(self.genetics.genotype_names(), genotypes.tolist(), strict=True)),
        }


def log_joint(genetics: Genetics, frequencies: FloatArray, phenotypes: IntArray) -> FloatArray:
    """log P(phenotype, genotype) for each observed phenotype (rows) and genotype (columns); -inf outside."""
    genotypes = genetics.genotype_probabilities(frequencies)
    inside = genetics.phenotype_of_genotype[None, :] == phenotypes[:, None]
    with np.errstate(divide="ignore"):
        return np.where(inside, np.log(genotypes)[None, :], -np.inf)


def posterior_over_genotypes(genetics: Genetics, frequencies: FloatArray, phenotypes: IntArray) -> FloatArray:
    """log P(genotype | phenotype); a phenotype of probability 0 (its alleles gone) has none: -inf throughout."""
    joint = log_joint(genetics, frequencies, phenotypes)
    top = np.max(joint, axis=1, keepdims=True)
    possible = np.isfinite(top[:, 0])
    posterior = np.full_like(joint, -np.inf)
    rows = joint[possible] - top[possible]
    with np.errstate(divide="ignore"):
        posterior[possible] = rows - np.log(np.sum(np.exp(rows), axis=1, keepdims=True))
    return posterior


def sample(genetics: Genetics, frequencies: FloatArray, n: int, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """``n`` individuals: each one's genotype (two alleles drawn independently) and the phenotype it shows."""
    a = rng.choice(len(frequencies), size=n, p=frequencies)
    b = rng.choice(len(frequencies), size=n, p=frequencies)
    i, j = np.minimum(a, b), np.maximum(a, b)
    n_alleles = len(frequencies)
    # Upper-triangle position of (i, j): rows before i hold sum_{r<i} (A - r) pairs.
    genotype = i * n_alleles - i * (i - 1) // 2 + (j - i)
    return genotype.astype(np.intp), genetics.phenotype_of_genotype[genotype]
