"""Kept models: what a model looks like, and the bodies of predict, score and sample.

The import bodies are each family's (``kind`` picks one); everything else is shared by every family.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas.abundances import ClassOfReads
from service.schemas.coins import CoinCounts
from service.schemas.common import REQUEST_CONFIG
from service.schemas.hmm import HmmSequences
from service.schemas.points import Points


class ModelSummary(BaseModel):
    id: str = Field(description="a fit's model has the fit's job_id as its id")
    kind: str = Field(description="the model family: coins, gaussian, ...")
    n_features: int | None = Field(description="dimensions of a point the model expects (null for coins)")
    covariance_type: str | None = Field(None, description="gaussian: full, diag, spherical or tied (hmm: diag, full)")
    emission: str | None = Field(None, description="hmm: categorical or gaussian")
    alleles: list[str] | None = Field(None, description="alleles: the alleles, in the order of params.frequencies")
    phenotypes: list[dict[str, Any]] | None = Field(
        None, description="alleles: each phenotype's name and genotypes (predict and score take these names)"
    )
    log_likelihood: float | None = Field(None, description="of the data it was fitted to (null for an import)")
    created_at: str
    job_id: str | None = Field(description="the job that fitted it (null for a synchronous fit or an import)")


class KeptModel(ModelSummary):
    params: dict[str, Any] = Field(description="the parameters, as a fit's result shows them")


class ModelPage(BaseModel):
    items: list[ModelSummary] = Field(description="newest first, without their parameters (read one for those)")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")


# The fields of a predict/score body that carry observations: exactly one is given.
OBSERVATION_FIELDS = ("points", "sequences", "counts", "phenotypes", "classes", "dataset")


class ScoreRequest(BaseModel):
    """New observations for a kept model: exactly one of points, sequences, counts, phenotypes, classes or dataset."""

    model_config = REQUEST_CONFIG | ConfigDict(arbitrary_types_allowed=True)

    points: Points | None = Field(None, description="gaussian: a list of numbers (1-D) or rows of d numbers")
    sequences: Annotated[list[str], Field(min_length=1)] | HmmSequences | None = Field(
        None,
        union_mode="left_to_right",
        description='coins: experiments as flips, e.g. "HTTH"; hmm: sequences as lists of symbols, numbers or rows',
    )
    counts: list[CoinCounts] | None = Field(None, min_length=1, description="coins: experiments as heads and tails")
    phenotypes: list[Annotated[str, Field(max_length=128)]] | None = Field(
        None, min_length=1, description="alleles: the phenotype of each individual, by name (labels: genotypes)"
    )
    classes: list[ClassOfReads] | None = Field(
        None,
        min_length=1,
        description="abundances: equivalence classes (target names); each is scored as one read of it, so counts "
        "do not enter (sum count x per_observation is the fit's log-likelihood)",
    )
    dataset: str | None = Field(None, min_length=1, max_length=64, description="the id of an uploaded dataset")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in OBSERVATION_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(OBSERVATION_FIELDS)} (got {', '.join(given) or 'none'})")
        return self

    @property
    def observation_field(self) -> str:
        return next(name for name in OBSERVATION_FIELDS if getattr(self, name) is not None)


class PredictRequest(ScoreRequest):
    return_responsibilities: bool = Field(False, description="include the n x K responsibilities")


class Prediction(BaseModel):
    labels: list[int] | list[list[int]] = Field(
        description="the most probable component of each observation (alleles: genotype, in the order of "
        "params.genotype_frequencies; hmm: the Viterbi state path of each sequence)"
    )
    responsibilities: list[list[float]] | list[list[list[float]]] | None = Field(
        description="n x K (hmm: per sequence, steps x K posterior state probabilities); null unless asked for"
    )


class Score(BaseModel):
    log_likelihood: float = Field(description="total log-likelihood of the observations under the model")
    mean_log_likelihood: float = Field(description="per observation")
    per_observation: list[float] = Field(
        description="log p(observation) (scikit-learn's score_samples; coins include the binomial coefficient; "
        "hmm: log p(sequence), one per sequence)"
    )


class SampleRequest(BaseModel):
    model_config = REQUEST_CONFIG

    n: int = Field(ge=1, description="observations to draw (hmm: the steps of one sequence)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed => same sample (null: random)")
    flips: int = Field(10, ge=1, le=100_000, description="coins: flips per experiment")


class Sample(BaseModel):
    points: list[float] | list[list[float]] | None = Field(
        None, exclude_if=lambda v: v is None, description="gaussian: n rows of d numbers"
    )
    sequences: list[str] | list[list[str] | list[int] | list[float] | list[list[float]]] | None = Field(
        None, exclude_if=lambda v: v is None, description="coins: n experiments as flips; hmm: one sequence of n steps"
    )
    phenotypes: list[str] | None = Field(
        None, exclude_if=lambda v: v is None, description="alleles: n individuals' phenotypes"
    )
    targets: list[str] | None = Field(
        None, exclude_if=lambda v: v is None, description="abundances: the target (name) each read came from"
    )
    labels: list[int] | list[list[int]] = Field(
        description="the component each observation was drawn from (alleles: its genotype, as in predict; hmm: "
        "the hidden state of every step, per sequence)"
    )
    seed: int = Field(description="the seed used (replays this sample)")
