"""A kept abundance model used on new equivalence classes: log-joints (for predict and score) and read samples.

A read of class c came from target t with probability proportional to rho_t / l_t over the targets of c; the
read itself (a fragment at one position) has probability sum_{t in c} rho_t / l_t, the term of the fit's
log-likelihood. Counts do not enter: each class is scored as one read of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from service.em.abundances import counts_and_tpm
from service.em.errors import InvalidParameterError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


@dataclass(frozen=True)
class AbundanceModel:
    names: list[str]
    lengths: FloatArray  # (T,) effective lengths, > 0
    rho: FloatArray  # (T,) fraction of reads per target, sums to 1
    index: dict[str, int]  # name -> position

    @classmethod
    def of(cls, names: Sequence[str], lengths: Any, rho: Any) -> AbundanceModel:
        """Checked parameters, as a fit's ``init.rho`` is checked (an InvalidParameterError naming the field)."""
        lengths_array = np.asarray(lengths, dtype=np.float64)
        rho_array = np.asarray(rho, dtype=np.float64)
        n_targets = len(names)
        if lengths_array.shape != (n_targets,):
            raise InvalidParameterError(
                f"params.lengths has {lengths_array.size} values, expected one per target ({n_targets})",
                "params.lengths",
            )
        if rho_array.shape != (n_targets,):
            raise InvalidParameterError(
                f"params.rho has {rho_array.size} values, expected one per target ({n_targets})", "params.rho"
            )
        if not np.all(np.isfinite(lengths_array) & (lengths_array > 0)):
            raise InvalidParameterError("params.lengths must each be a finite number > 0", "params.lengths")
        if not np.all(np.isfinite(rho_array) & (rho_array >= 0)):
            raise InvalidParameterError("params.rho must be finite and >= 0", "params.rho")
        if abs(rho_array.sum() - 1.0) > 1e-6:
            raise InvalidParameterError(f"params.rho must sum to 1, it sums to {rho_array.sum():.6g}", "params.rho")
        index = {name: t for t, name in enumerate(names)}
        if len(index) != n_targets:
            repeated = next(name for t, name in enumerate(names) if index[name] != t)
            raise InvalidParameterError(f"target name {repeated!r} is given twice", "params.targets")
        return cls(list(names), lengths_array, rho_array / rho_array.sum(), index)

    @property
    def weights(self) -> FloatArray:
        """The components' weights, as every kept model has them: here each target's share of the reads."""
        return self.rho

    def to_dict(self, n_reads: float = 1.0) -> dict[str, Any]:
        """Params as a fit's result shows them; ``est_counts`` are rho x ``n_reads`` (1: per read)."""
        est_counts, tpm = counts_and_tpm(self.rho, n_reads, self.lengths)
        return {"targets": self.names, "lengths": self.lengths, "est_counts": est_counts, "tpm": tpm, "rho": self.rho}

    def log_joint(self, incidence: sp.csr_matrix) -> FloatArray:
        """(classes, T): log(rho_t / l_t) for the targets of each class, -inf for the others."""
        joint = np.full(incidence.shape, -np.inf)
        rows = np.repeat(np.arange(incidence.shape[0]), np.diff(incidence.indptr))
        with np.errstate(divide="ignore"):  # rho_t = 0: the read cannot come from t
            joint[rows, incidence.indices] = np.log(self.rho / self.lengths)[incidence.indices]
        return joint

    def sample(self, n: int, seed: int) -> IntArray:
        """The target of each of ``n`` reads drawn from the model (in proportion to rho); same seed, same reads."""
        labels: IntArray = np.random.default_rng(seed).choice(len(self.rho), size=n, p=self.rho)
        return labels
