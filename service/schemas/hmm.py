"""Request and result of the hidden Markov model fit (Baum-Welch)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema, model_validator

from service.em.errors import EMError
from service.em.hmm_data import Emission, HmmCovarianceType, sequence_array
from service.schemas.common import REQUEST_CONFIG, FitOptions, FitResultBase

Matrix = list[list[float]]
Symbols = list[str] | list[int]

_NUMBER = {"type": "number"}
_SEQUENCE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "title": "symbols (strings)"},
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "title": "symbols (integers) or numbers"},
        {"type": "array", "items": _NUMBER, "minItems": 1, "title": "numbers (1-D gaussian)"},
        {
            "type": "array",
            "items": {"type": "array", "items": _NUMBER, "minItems": 1},
            "minItems": 1,
            "title": "rows of d numbers (gaussian)",
        },
    ]
}
SEQUENCES_JSON_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": _SEQUENCE_SCHEMA,
    "minItems": 1,
    "description": "a list of sequences: categorical, lists of symbols (all strings or all integers); gaussian, "
    "lists of numbers or of equal-length rows of numbers. Lengths may differ",
}


def to_sequences(value: Any) -> list[NDArray[Any]]:
    """Each sequence as one numpy array (one conversion per sequence, not per step), or a ValueError naming the
    first problem (empty, mixed symbol types, ragged rows, a non-finite number)."""
    if not isinstance(value, list) or not value:
        raise ValueError("sequences must be a non-empty list of sequences")
    try:
        return [sequence_array(sequence, i) for i, sequence in enumerate(value)]
    except EMError as error:
        raise ValueError(error.message) from None


HmmSequences = Annotated[
    list[NDArray[Any]],
    PlainValidator(to_sequences),
    PlainSerializer(lambda arrays: [a.tolist() for a in arrays]),
    WithJsonSchema(SEQUENCES_JSON_SCHEMA),
]


class CategoricalEmissionsInit(BaseModel):
    model_config = REQUEST_CONFIG

    symbols: Symbols = Field(
        min_length=1, description="the alphabet, in the order of the emission columns; a symbol outside it is a 422"
    )
    probabilities: Matrix | None = Field(
        None, description="K x S emission probabilities over these symbols (null: drawn from the seed)"
    )


class HmmInit(BaseModel):
    model_config = REQUEST_CONFIG

    start: list[float] | None = Field(None, description="K start probabilities, summing to 1")
    transitions: Matrix | None = Field(None, description="K x K, row i = P(next state | state i), rows sum to 1")
    emissions: Matrix | CategoricalEmissionsInit | None = Field(
        None,
        description="categorical: K x S probabilities over the sorted symbols, or {symbols, probabilities?} to fix "
        "the alphabet and its order",
    )
    means: list[float] | Matrix | None = Field(None, description="gaussian: K x d (1-D: a flat list of K numbers)")
    covariances: list[float] | Matrix | list[Matrix] | None = Field(
        None, description="gaussian: diag K x d variances, full K x d x d (1-D: a flat list of K variances)"
    )


class HmmFitRequest(FitOptions):
    """Sequences to explain by a hidden Markov chain of K states, each emitting symbols or numbers."""

    model_config = REQUEST_CONFIG | ConfigDict(arbitrary_types_allowed=True)

    sequences: HmmSequences | None = Field(None, description="the observed sequences (lengths may differ)")
    emission: Emission = Field("categorical", description="categorical (symbols) or gaussian (numbers or rows)")
    n_states: int = Field(2, ge=1, description="K, the number of hidden states")
    covariance_type: HmmCovarianceType = Field("diag", description="gaussian only: diagonal or full covariances")
    init: HmmInit | None = Field(
        None, description="starting point (any part; the rest is drawn from the seed); states then keep this order"
    )
    reg_covar: float = Field(0.0, ge=0, description="gaussian: added to covariance diagonals (0: plain ML)")
    return_labels: bool = Field(True, description="include the Viterbi state path of every sequence")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.dataset is not None:
            raise ValueError("hmm fits take sequences in the request; uploaded datasets are not supported for hmm")
        if self.sequences is None:
            raise ValueError("give sequences")
        init = self.init
        if init is not None and self.n_init != 1:
            raise ValueError("n_init must be 1 when init is given (the states' order and start are the caller's)")
        if init is not None and self.emission == "categorical" and (init.means or init.covariances):
            raise ValueError("init.means and init.covariances are for gaussian emissions")
        if init is not None and self.emission == "gaussian" and init.emissions is not None:
            raise ValueError("init.emissions is for categorical emissions")
        if self.emission == "categorical" and "covariance_type" in self.model_fields_set:
            raise ValueError("covariance_type is for gaussian emissions")
        return self

    @property
    def n_steps(self) -> int:
        return sum(len(s) for s in self.sequences or [])

    @property
    def fixed_symbols(self) -> list[Any] | None:
        emissions = self.init.emissions if self.init is not None else None
        return emissions.symbols if isinstance(emissions, CategoricalEmissionsInit) else None

    @property
    def init_emissions(self) -> Matrix | None:
        emissions = self.init.emissions if self.init is not None else None
        return emissions.probabilities if isinstance(emissions, CategoricalEmissionsInit) else emissions


class HmmParamsOut(BaseModel):
    start: list[float] = Field(description="P(first state)")
    transitions: Matrix = Field(description="K x K, row i = P(next state | state i)")
    symbols: Symbols | None = Field(None, exclude_if=lambda v: v is None, description="categorical: the alphabet")
    emissions: Matrix | None = Field(
        None, exclude_if=lambda v: v is None, description="categorical: K x S, P(symbol | state)"
    )
    means: Matrix | None = Field(None, exclude_if=lambda v: v is None, description="gaussian: K x d")
    covariances: Matrix | list[Matrix] | None = Field(
        None, exclude_if=lambda v: v is None, description="gaussian: diag K x d, full K x d x d"
    )


class HmmFitResult(FitResultBase):
    model: Literal["hmm"] = "hmm"
    emission: Emission
    covariance_type: HmmCovarianceType | None = Field(description="gaussian: diag or full; null for categorical")
    params: HmmParamsOut
    log_likelihood: float = Field(description="log-likelihood of all sequences at params")
    mean_log_likelihood: float = Field(description="per time step")
    labels: list[list[int]] | None = Field(description="the Viterbi state path of every sequence (when asked)")


class HmmParamsIn(BaseModel):
    model_config = REQUEST_CONFIG

    start: list[float] = Field(min_length=1)
    transitions: Matrix = Field(min_length=1)
    symbols: Symbols | None = Field(None, description="categorical: the alphabet (the emission columns' symbols)")
    emissions: Matrix | None = Field(None, description="categorical: K x S")
    means: list[float] | Matrix | None = Field(None, description="gaussian: K x d")
    covariances: list[float] | Matrix | list[Matrix] | None = Field(None, description="gaussian: diag K x d, full")


class HmmModelImport(BaseModel):
    """A hidden Markov model's parameters, to keep as a model."""

    model_config = REQUEST_CONFIG

    kind: Literal["hmm"]
    emission: Emission = "categorical"
    covariance_type: HmmCovarianceType = "diag"
    params: HmmParamsIn


def _casino_rolls() -> list[str]:
    """300 rolls of the dishonest casino (fair die, and a loaded one that shows 6 half the time), fixed seed."""
    rng = np.random.default_rng(2024)
    transitions = np.array([[0.95, 0.05], [0.1, 0.9]])
    emissions = np.array([[1 / 6] * 6, [0.1] * 5 + [0.5]])
    state, rolls = 0, []
    for _ in range(300):
        rolls.append(str(int(rng.choice(6, p=emissions[state])) + 1))
        state = int(rng.random() < transitions[state, 1])
    return rolls


HMM_EXAMPLES: dict[str, dict[str, Any]] = {
    "dishonest_casino": {
        "summary": "The dishonest casino: a fair die and a loaded one (Durbin et al.)",
        "description": "300 rolls; the casino switches to a loaded die (a 6 half the time) with probability 0.05 "
        "and back with 0.1. Started near the truth, Baum-Welch finds the loaded state; labels say when it was used.",
        "value": {
            "sequences": [_casino_rolls()],
            "emission": "categorical",
            "n_states": 2,
            "init": {
                "start": [0.5, 0.5],
                "transitions": [[0.9, 0.1], [0.1, 0.9]],
                "emissions": {
                    "symbols": ["1", "2", "3", "4", "5", "6"],
                    "probabilities": [[1 / 6] * 6, [0.15, 0.15, 0.15, 0.15, 0.15, 0.25]],
                },
            },
            "seed": 0,
        },
    },
    "gaussian_two_regimes": {
        "summary": "Two regimes of a 1-D signal (gaussian emissions)",
        "value": {
            "sequences": [
                [0.1, -0.3, 0.2, 0.0, 5.1, 4.8, 5.3, 4.9, 5.2, 0.3, -0.1, 0.2],
                [4.7, 5.0, 5.4, 0.1, -0.2, 0.0, 0.4],
            ],
            "emission": "gaussian",
            "n_states": 2,
            "seed": 0,
        },
    },
}
