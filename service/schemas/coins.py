"""Request and result of the K-coin binomial mixture fit."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, model_validator

from service.schemas.common import REQUEST_CONFIG, FitOptions, FitResultBase
from service.schemas.uncertainty import BootstrapOption, StandardErrorsOption, WithStandardErrors

Probability = Annotated[float, Field(gt=0, lt=1)]
Weight = Annotated[float, Field(ge=0, le=1)]


class CoinCounts(BaseModel):
    model_config = REQUEST_CONFIG

    heads: int = Field(ge=0, le=10**15)
    tails: int = Field(ge=0, le=10**15)

    @model_validator(mode="after")
    def _at_least_one_flip(self) -> Self:
        if self.heads + self.tails < 1:
            raise ValueError("an experiment needs at least one flip (heads + tails >= 1)")
        return self


class CoinInit(BaseModel):
    model_config = REQUEST_CONFIG

    biases: list[Probability] = Field(min_length=1, description="P(heads) per coin, each in (0, 1)")
    weights: list[Weight] | None = Field(None, description="mixing weights, >= 0, summing to 1")


class CoinFitRequest(FitOptions, StandardErrorsOption, BootstrapOption):
    """Experiments of coin flips, each by one of K coins of unknown bias."""

    sequences: list[str] | None = Field(
        None,
        min_length=1,
        description="one string per experiment, flips of the same coin as H/T (any case; spaces ignored)",
    )
    counts: list[CoinCounts] | None = Field(None, min_length=1, description="the same as heads/tails counts")
    n_coins: int = Field(2, ge=1, description="K, the number of coins")
    init: CoinInit | None = Field(
        None, description="starting point; results then keep this component order, and n_init must be 1"
    )
    fit_weights: bool = Field(
        False,
        description="false: each experiment's coin is uniform (or init.weights) and stays fixed, as in "
        "Do & Batzoglou; true: mixing weights are estimated too",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        given = [name for name in ("sequences", "counts", "dataset") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of sequences, counts or dataset (got {', '.join(given) or 'none'})")
        if self.init is not None:
            if len(self.init.biases) != self.n_coins:
                raise ValueError(f"init.biases has {len(self.init.biases)} values, expected n_coins = {self.n_coins}")
            if self.init.weights is not None and len(self.init.weights) != self.n_coins:
                raise ValueError(f"init.weights has {len(self.init.weights)} values, expected n_coins = {self.n_coins}")
            if self.n_init != 1:
                raise ValueError("n_init must be 1 when init is given (every start would be the same)")
        return self

    @property
    def n_experiments(self) -> int:
        if self.dataset is not None:
            return len(self.dataset_array())
        return len(self.sequences if self.sequences is not None else self.counts or [])


class CoinParamsOut(BaseModel):
    biases: list[float] = Field(description="P(heads) per coin")
    weights: list[float] = Field(description="mixing weights")


class CoinParamsIn(BaseModel):
    model_config = REQUEST_CONFIG

    biases: list[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=1, description="P(heads) per coin")
    weights: list[Weight] | None = Field(None, description="mixing weights summing to 1 (null: equal)")


class CoinModelImport(BaseModel):
    """A coin mixture's parameters, to keep as a model."""

    model_config = REQUEST_CONFIG

    kind: Literal["coins"]
    params: CoinParamsIn


class CoinFitResult(FitResultBase, WithStandardErrors):
    model: Literal["coins"] = "coins"
    params: CoinParamsOut
    log_likelihood: float = Field(description="observed-data log-likelihood (no binomial coefficient)")
    responsibilities: list[list[float]] = Field(description="P(coin k | experiment), one row per experiment")


# Worked request examples shown in Swagger UI (their results: service/schemas/result_examples/coins.json).
DO_BATZOGLOU_SEQUENCES = ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"]

COIN_EXAMPLES: dict[str, dict[str, Any]] = {
    "do_batzoglou": {
        "summary": "Do & Batzoglou (2008): five experiments, two coins",
        "description": "From biases 0.6 / 0.5 EM converges to 0.7968 / 0.5196, as in the paper's figure.",
        "value": {"sequences": DO_BATZOGLOU_SEQUENCES, "n_coins": 2, "init": {"biases": [0.6, 0.5]}, "seed": 0},
    },
    "counts_fit_weights": {
        "summary": "Heads/tails counts, three coins, weights estimated too",
        "value": {
            "counts": [
                {"heads": 9, "tails": 1},
                {"heads": 8, "tails": 2},
                {"heads": 5, "tails": 5},
                {"heads": 4, "tails": 6},
                {"heads": 1, "tails": 9},
                {"heads": 2, "tails": 8},
                {"heads": 9, "tails": 1},
            ],
            "n_coins": 3,
            "fit_weights": True,
            "n_init": 5,
            "seed": 1,
        },
    },
}
