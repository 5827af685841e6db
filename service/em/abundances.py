"""Transcript abundances from equivalence classes (the EM inside kallisto and salmon).

Reads compatible with the same set of targets are summarised as one equivalence class with a count; the
latent variable is the target each read came from. With rho_t the fraction of reads from target t and
l_t its effective length, a read of class c has probability sum_{t in c} rho_t / l_t (a target's reads are
spread uniformly over its l_t positions), so the log-likelihood is

    L(rho) = sum_c n_c log sum_{t in c} rho_t / l_t

exactly as the API defines it (no constant dropped; the multinomial coefficient of the class counts is not in
it). L is concave in rho, so EM from any interior start reaches the maximum value; the maximiser is unique
only when the class-target incidence has full column rank.

The class-target incidence M is a CSR matrix (classes x targets, ones), so one iteration is one sparse
mat-vec pair: q = M @ (rho / l) (each class's probability), then M^T @ (n / q), plus elementwise work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from service.em.errors import DegenerateDataError, InvalidParameterError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

TPM_TOTAL = 1e6
# Rank checks (for splits no data can decide) factorise a dense classes x targets matrix: only for small fits.
_RANK_CHECK_CELLS = 250_000
# Targets named in warnings at most (a transcriptome can have thousands of unseen ones).
_NAMED_AT_MOST = 10


@dataclass(frozen=True)
class AbundanceParams:
    rho: FloatArray  # fraction of reads per target, shape (T,), sums to 1


def incidence_matrix(class_targets: list[IntArray] | list[list[int]], n_targets: int) -> sp.csr_matrix:
    """The classes x targets 0/1 CSR matrix of classes given as lists of target indices (no repeats)."""
    sizes = np.fromiter((len(c) for c in class_targets), dtype=np.int64, count=len(class_targets))
    indptr = np.zeros(len(class_targets) + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    indices = (
        np.concatenate([np.asarray(c, dtype=np.int64) for c in class_targets])
        if len(class_targets)
        else np.empty(0, dtype=np.int64)
    )
    return incidence_from_arrays(indptr, indices, n_targets)


def incidence_from_arrays(indptr: NDArray[Any], indices: NDArray[Any], n_targets: int) -> sp.csr_matrix:
    """CSR incidence from its index arrays (checked: indices in range, no target twice in a class)."""
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= n_targets):
        raise InvalidParameterError("a class names a target index out of range", "classes")
    matrix = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(len(indptr) - 1, n_targets))
    matrix.sort_indices()
    # A repeated index would count a target twice in its class's probability.
    repeats = np.flatnonzero(np.diff(matrix.indices) == 0)
    row_of = np.searchsorted(matrix.indptr, repeats, side="right") - 1
    same_row = matrix.indptr[row_of + 1] > repeats + 1
    if np.any(same_row):
        row = int(row_of[np.flatnonzero(same_row)[0]])
        raise InvalidParameterError(f"classes[{row}] names a target twice", f"classes.{row}.targets")
    return matrix


class TranscriptAbundances:
    """Fills the hooks of :class:`service.em.loop.EMModel`; ``n_observations`` is the number of reads."""

    def __init__(
        self,
        lengths: FloatArray,
        incidence: sp.csr_matrix,
        counts: FloatArray,
        init_rho: FloatArray | None = None,
        names: list[str] | None = None,
        random_starts: bool = False,
    ) -> None:
        lengths = np.asarray(lengths, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.float64)
        n_classes, n_targets = incidence.shape
        if lengths.shape != (n_targets,) or n_targets == 0:
            raise InvalidParameterError(f"lengths has {lengths.size} values, expected {n_targets} targets", "targets")
        if not np.all(np.isfinite(lengths) & (lengths > 0)):
            raise InvalidParameterError("every target length must be a finite number > 0", "targets")
        if counts.shape != (n_classes,):
            raise InvalidParameterError(f"counts has {counts.size} values, expected {n_classes} classes", "classes")
        if not np.all(np.isfinite(counts) & (counts >= 0)):
            raise InvalidParameterError("every class count must be a finite number >= 0", "classes")
        sizes = np.diff(incidence.indptr)
        if np.any(sizes == 0):
            row = int(np.flatnonzero(sizes == 0)[0])
            raise InvalidParameterError(f"classes[{row}] names no target", f"classes.{row}.targets")
        self.n_reads = float(counts.sum())
        if not self.n_reads > 0:
            raise DegenerateDataError("every class count is 0: there are no reads to fit", "classes")
        # Classes without reads say nothing about rho (and 0 * log 0 would be NaN): dropped once, here.
        seen = counts > 0
        self.incidence: sp.csr_matrix = incidence if seen.all() else incidence[seen]
        self.incidence_t: sp.csr_matrix = self.incidence.T.tocsr()  # M^T as CSR: a gather, as fast as M @ v
        self.counts = counts[seen]
        self.lengths = lengths
        self.inverse_lengths = 1.0 / lengths
        self.names = names if names is not None else [f"targets[{t}]" for t in range(n_targets)]
        self.n_targets = n_targets
        # Targets no read can come from: rho 0 is the maximum (any mass there is lost to every class).
        self.unseen = np.diff(self.incidence_t.indptr) == 0
        self.given_rho = None if init_rho is None else self._check_rho(np.asarray(init_rho, dtype=np.float64))
        self.random_starts = random_starts

    @property
    def n_observations(self) -> int:
        return max(1, round(self.n_reads))

    def _check_rho(self, rho: FloatArray) -> FloatArray:
        if rho.shape != (self.n_targets,):
            raise InvalidParameterError(
                f"init.rho has {rho.size} values, expected one per target ({self.n_targets})", "init.rho"
            )
        if not np.all(np.isfinite(rho) & (rho >= 0)):
            raise InvalidParameterError("init.rho must be finite and >= 0", "init.rho")
        if abs(rho.sum() - 1.0) > 1e-6:
            raise InvalidParameterError(f"init.rho must sum to 1, it sums to {rho.sum():.6g}", "init.rho")
        impossible = (self.incidence @ rho) == 0
        if np.any(impossible):
            raise InvalidParameterError(
                "init.rho is 0 on every target of a class that has reads: those reads would be impossible",
                "init.rho",
            )
        normalised: FloatArray = rho / rho.sum()
        return normalised

    def initialize(self, rng: np.random.Generator) -> AbundanceParams:
        """``init.rho`` if given; else uniform (kallisto's start), or a Dirichlet(1) draw when ``random_starts``.

        The log-likelihood is concave, so every start reaches the same maximum value: random starts can only
        show a different split among targets the classes cannot tell apart.
        """
        if self.given_rho is not None:
            return AbundanceParams(self.given_rho)
        if self.random_starts:
            return AbundanceParams(rng.dirichlet(np.ones(self.n_targets)))
        return AbundanceParams(np.full(self.n_targets, 1.0 / self.n_targets))

    # --- the EM hooks: one mat-vec pair per iteration ---

    def e_step(self, params: AbundanceParams) -> tuple[float, FloatArray]:
        """Log-likelihood and each target's expected reads (the M-step's only statistic; they sum to N)."""
        weights = params.rho * self.inverse_lengths
        class_probability = self.incidence @ weights
        with np.errstate(divide="ignore"):  # a class of probability 0: -inf, reported by the driver
            terms = np.log(class_probability)
        # A product and numpy's pairwise sum, not a BLAS dot: after the non-BLAS work above, OpenBLAS's threads
        # have gone to sleep, and waking them cost 5-10 ms a call on the shared 2 cores (the sum itself, 0.1 ms).
        terms *= self.counts
        log_likelihood = float(np.add.reduce(terms))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.counts / class_probability
        expected: FloatArray = weights * (self.incidence_t @ ratio)
        return log_likelihood, expected

    def m_step(self, expected: FloatArray, params: AbundanceParams) -> tuple[AbundanceParams, list[str]]:
        return AbundanceParams(expected / self.n_reads), []

    def log_responsibilities(self, params: AbundanceParams) -> FloatArray:
        # Per class, not per read, and classes x targets: a result never carries them (a transcriptome's would
        # be 10^11 numbers); the driver asks once, so an empty array answers.
        return np.empty((0, self.n_targets))

    def diagnose(self, params: AbundanceParams) -> list[str]:
        warnings = []
        if np.any(self.unseen):
            warnings.append(
                f"{int(self.unseen.sum())} target(s) appear in no class with reads ({self._named(self.unseen)}): "
                "no read can come from them, so their abundance is 0"
            )
        warnings.extend(self.unidentifiable())
        return warnings

    def unidentifiable(self) -> list[str]:
        """Warnings for splits the classes cannot decide: legitimate data, never an error.

        Targets in exactly the same classes enter the likelihood only through sum rho_t / l_t: with equal
        lengths any split of their total is a maximum (EM keeps the start's split); with different lengths the
        maximum puts all of it on the shortest, which EM approaches geometrically (by l_short / l_long a step),
        so the reported split depends on where it stopped. Beyond identical classes, a split is undetermined
        when [M diag(1/l); 1^T] (seen targets) has a null space: checked for small fits only.
        """
        warnings = []
        groups = _identical_columns(self.incidence_t, self.unseen)
        for group in groups[:_NAMED_AT_MOST]:
            named = ", ".join(repr(self.names[t]) for t in group[:_NAMED_AT_MOST])
            named += " …" if len(group) > _NAMED_AT_MOST else ""
            lengths = self.lengths[group]
            if np.all(lengths == lengths[0]):
                warnings.append(
                    f"targets {named} are always seen together (in the same classes) and have equal lengths: "
                    "their total is determined but the split between them is not (EM keeps the start's split; "
                    "the uniform start splits evenly)"
                )
            else:
                shortest = self.names[group[int(np.argmin(lengths))]]
                warnings.append(
                    f"targets {named} are always seen together (in the same classes): the likelihood is highest "
                    f"with all their reads on the shortest ({shortest!r}); EM moves them there slowly, so their "
                    "split depends on when it stopped — only their total is well determined"
                )
        if len(groups) > _NAMED_AT_MOST:
            warnings.append(f"… and {len(groups) - _NAMED_AT_MOST} more groups of targets always seen together")
        seen = np.flatnonzero(~self.unseen)
        if groups or self.incidence.shape[0] * seen.size > _RANK_CHECK_CELLS or seen.size < 2:
            return warnings
        design = np.vstack([self.incidence[:, seen].toarray() * self.inverse_lengths[seen], np.ones(seen.size)])
        rank = np.linalg.matrix_rank(design)
        if rank < seen.size:
            warnings.append(
                f"the classes cannot tell the targets apart: {seen.size} targets have reads but the classes pin "
                f"down only {rank} combinations of their abundances, so the split among some of them may be one "
                "of many equally likely ones (it depends on the start)"
            )
        return warnings

    def _named(self, mask: NDArray[np.bool_]) -> str:
        which = np.flatnonzero(mask)
        named = ", ".join(repr(self.names[t]) for t in which[:_NAMED_AT_MOST])
        return named + (" …" if which.size > _NAMED_AT_MOST else "")

    def canonical_order(self, params: AbundanceParams) -> IntArray:
        return np.arange(self.n_targets)  # targets are reported in input order

    def permute(self, params: AbundanceParams, order: IntArray) -> AbundanceParams:
        return AbundanceParams(params.rho[order])

    def to_dict(self, params: AbundanceParams) -> dict[str, Any]:
        est_counts, tpm = counts_and_tpm(params.rho, self.n_reads, self.lengths)
        return {"est_counts": est_counts, "tpm": tpm, "rho": params.rho}


def counts_and_tpm(rho: FloatArray, n_reads: float, lengths: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Expected reads per target (rho N) and transcripts per million (est_counts / length, summing to 10^6)."""
    est_counts = rho * n_reads
    per_base = rho / lengths
    tpm: FloatArray = per_base * (TPM_TOTAL / per_base.sum())
    return est_counts, tpm


def _identical_columns(incidence_t: sp.csr_matrix, unseen: NDArray[np.bool_]) -> list[list[int]]:
    """Groups (of two or more) of seen targets whose sets of classes are identical, in input order.

    Candidates share a fingerprint (two random projections of their rows of M^T and their class count);
    each candidate group is then compared exactly, so a hash collision never merges targets.
    """
    n_classes = incidence_t.shape[1]
    rng = np.random.default_rng(0)
    projections = incidence_t @ rng.random((n_classes, 2))
    sizes = np.diff(incidence_t.indptr)
    keys = np.column_stack([projections, sizes])[~unseen]
    seen = np.flatnonzero(~unseen)
    _, inverse, multiplicity = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    groups: list[list[int]] = []
    for key in np.flatnonzero(multiplicity > 1):
        members = seen[inverse == key]
        by_classes: dict[bytes, list[int]] = {}
        for t in members:
            row = incidence_t.indices[incidence_t.indptr[t] : incidence_t.indptr[t + 1]]
            by_classes.setdefault(row.tobytes(), []).append(int(t))
        groups.extend(sorted(g) for g in by_classes.values() if len(g) > 1)
    return sorted(groups)
