"""A fitted (or imported) hidden Markov model used on new sequences: Viterbi paths, posteriors, scores, samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.errors import InvalidParameterError
from service.em.hmm import HiddenMarkovModel, HmmInit, HmmParams, check_init
from service.em.hmm_data import (
    EMISSIONS,
    HMM_COVARIANCE_TYPES,
    Emission,
    HmmCovarianceType,
    Sequences,
    check_symbols,
    encode,
)

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class HmmModel:
    params: HmmParams
    emission: Emission
    covariance_type: HmmCovarianceType
    symbols: list[Any] | None  # categorical: the alphabet, in the emission columns' order

    @classmethod
    def of(cls, params: dict[str, Any], emission: str, covariance_type: str) -> HmmModel:
        """Checked parameters (an InvalidParameterError naming ``params.<field>`` otherwise)."""
        if emission not in EMISSIONS:
            raise InvalidParameterError(f"unknown emission {emission!r}", "emission")
        if covariance_type not in HMM_COVARIANCE_TYPES:
            raise InvalidParameterError(f"unknown covariance_type {covariance_type!r}", "covariance_type")
        kind: Emission = emission  # narrowed by the checks above
        covariances: HmmCovarianceType = covariance_type
        K = len(params.get("start") or [])
        if K == 0:
            raise InvalidParameterError("params.start must list K start probabilities", "params.start")
        symbols = None
        if kind == "categorical":
            if params.get("symbols") is None or params.get("emissions") is None:
                raise InvalidParameterError("a categorical model needs params.symbols and params.emissions", "params")
            symbols = check_symbols(params["symbols"], "params.symbols").tolist()
            shape_of = Sequences(np.zeros(1, dtype=np.intp), np.ones(1, dtype=np.intp), symbols)
        else:
            if params.get("means") is None or params.get("covariances") is None:
                raise InvalidParameterError("a gaussian model needs params.means and params.covariances", "params")
            means = np.asarray(params["means"], dtype=np.float64)
            d = 1 if means.ndim == 1 else int(means.shape[-1])
            shape_of = Sequences(np.zeros((1, d)), np.ones(1, dtype=np.intp))
        given = HmmInit(
            start=params["start"],
            transitions=params.get("transitions"),
            emissions=params.get("emissions"),
            means=params.get("means"),
            covariances=params.get("covariances"),
        )
        checked = check_init(given, K, shape_of, kind, covariances, prefix="params")
        if checked.transitions is None:
            raise InvalidParameterError("params.transitions is missing", "params.transitions")
        return cls(
            HmmParams(checked.start, checked.transitions, checked.emissions, checked.means, checked.covariances),
            kind,
            covariances,
            symbols,
        )

    @property
    def n_states(self) -> int:
        return len(self.params.start)

    @property
    def weights(self) -> FloatArray:
        """The start probabilities: K of them (what the model routes count components by)."""
        return self.params.start

    @property
    def n_features(self) -> int:
        return 1 if self.params.means is None else int(self.params.means.shape[1])

    def to_dict(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {"start": p.start, "transitions": p.transitions}
        if p.emissions is not None:
            return out | {"symbols": self.symbols, "emissions": p.emissions}
        return out | {"means": p.means, "covariances": p.covariances}

    def encode(self, raw: list[Any]) -> Sequences:
        """New sequences in the model's terms: its alphabet, or rows of its dimension."""
        sequences = encode(raw, self.emission, self.symbols)
        if self.emission == "gaussian" and sequences.values.shape[1] != self.n_features:
            raise InvalidParameterError(
                f"the sequences have rows of {sequences.values.shape[1]} numbers; the model expects {self.n_features}",
                "sequences",
            )
        return sequences

    def _solver(self, sequences: Sequences) -> HiddenMarkovModel:
        return HiddenMarkovModel(
            sequences, self.n_states, self.emission, self.covariance_type, require_enough_steps=False
        )

    def predict(self, sequences: Sequences, responsibilities: bool) -> dict[str, Any]:
        """The Viterbi state path of every sequence, and when asked each step's posterior state probabilities."""
        solver = self._solver(sequences)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            self._check_possible(solver)
            labels = sequences.split(solver.viterbi(self.params))
            posteriors = sequences.split(np.exp(solver.log_responsibilities(self.params))) if responsibilities else None
        return {"labels": labels, "responsibilities": posteriors}

    def score(self, sequences: Sequences) -> FloatArray:
        """log p(sequence) of every sequence."""
        solver = self._solver(sequences)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return self._check_possible(solver)

    def _check_possible(self, solver: HiddenMarkovModel) -> FloatArray:
        per_sequence = solver.sequence_log_likelihoods(self.params)
        if not np.all(np.isfinite(per_sequence)):
            first = int(np.flatnonzero(~np.isfinite(per_sequence))[0])
            raise InvalidParameterError(
                f"sequences[{first}] has probability 0 under the model (or lies too far from it to compute one)",
                "sequences",
            )
        return per_sequence

    def sample(self, n: int, seed: int) -> tuple[list[Any], list[int]]:
        """One sequence of ``n`` steps and its hidden states, reproducibly from ``seed``."""
        rng = np.random.default_rng(seed)
        p = self.params
        cumulative = np.cumsum(p.transitions, axis=1)
        cumulative[:, -1] = 1.0
        draws = rng.random(n)
        states = np.empty(n, dtype=np.intp)
        state = int(np.searchsorted(np.cumsum(p.start)[:-1], draws[0], side="right"))
        rows = cumulative.tolist()
        for t in range(n):  # a Markov chain is sequential; plain Python floats are the fastest loop here
            if t:
                row, u = rows[state], draws[t]
                state = next((k for k, c in enumerate(row) if u < c), len(row) - 1)
            states[t] = state
        if p.emissions is not None:
            assert self.symbols is not None
            emission_cdf = np.cumsum(p.emissions, axis=1)
            codes = (rng.random(n)[:, None] >= emission_cdf[states]).sum(axis=1).clip(0, len(self.symbols) - 1)
            return [self.symbols[c] for c in codes], states.tolist()
        assert p.means is not None and p.covariances is not None
        noise = rng.standard_normal((n, self.n_features))
        if self.covariance_type == "diag":
            rows_out = p.means[states] + noise * np.sqrt(p.covariances[states])
        else:
            factors = np.linalg.cholesky(p.covariances)
            rows_out = p.means[states] + np.einsum("nij,nj->ni", factors[states], noise)
        values: list[Any] = rows_out[:, 0].tolist() if self.n_features == 1 else rows_out.tolist()
        return values, states.tolist()


def import_fields(emission: str, covariance_type: str) -> dict[str, Any]:
    """What a kept HMM stores besides its params."""
    return {"emission": emission, "covariance_type": covariance_type if emission == "gaussian" else None}
