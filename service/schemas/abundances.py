"""Request and result of the transcript abundance fit (equivalence classes of reads, as kallisto's EM takes them).

The schema checks shapes and ranges; names (unknown, repeated) are checked where they become indices, in
``service.families.abundances``, so each 422 can point at the class and the position at fault.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, model_validator

from service.schemas.common import REQUEST_CONFIG, FitOptions, FitResultBase

TargetName = Annotated[str, Field(min_length=1, max_length=256)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class AbundanceTarget(BaseModel):
    model_config = REQUEST_CONFIG

    name: TargetName = Field(description="the target's (transcript's) name, unique among targets")
    length: float = Field(gt=0, le=1e12, description="effective length (> 0), in the same unit for every target")


class EquivalenceClass(BaseModel):
    model_config = REQUEST_CONFIG

    targets: list[TargetName] = Field(
        min_length=1, description="the targets every read of this class is compatible with (each named once)"
    )
    count: int = Field(ge=0, le=10**15, description="reads in this class (an integer >= 0)")


class ClassOfReads(BaseModel):
    """An equivalence class to predict or score (a fit's classes can be sent as they are)."""

    model_config = REQUEST_CONFIG

    targets: list[TargetName] = Field(min_length=1, description="the targets its reads are compatible with")
    count: int = Field(1, ge=0, le=10**15, description="accepted, not used: a class is scored as one read of it")


class AbundanceInit(BaseModel):
    model_config = REQUEST_CONFIG

    rho: list[Fraction] = Field(
        min_length=1, description="starting fraction of reads per target, in the order of targets, summing to 1"
    )


class AbundanceFitRequest(FitOptions):
    """Targets with effective lengths, and equivalence classes of reads with counts."""

    targets: list[AbundanceTarget] = Field(min_length=1, description="the targets, with effective lengths")
    classes: list[EquivalenceClass] = Field(
        min_length=1, description="equivalence classes: sets of targets (by name) with read counts"
    )
    init: AbundanceInit | None = Field(None, description="starting rho (null: see random_start)")
    random_start: bool | None = Field(
        None,
        description="start from a Dirichlet(1) draw of rho (from the start's seed) instead of uniform, kallisto's "
        "start; null: random when n_init > 1. The likelihood is concave, so starts differ only in how they split "
        "reads among targets the classes cannot tell apart. Replay one start with n_init 1, its seed and true.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.dataset is not None:
            raise ValueError("abundances take targets and classes in the body; a dataset cannot be named")
        if self.init is not None and self.n_init != 1:
            raise ValueError("n_init must be 1 when init is given (every start would be the same)")
        if self.init is not None and self.random_start:
            raise ValueError("random_start cannot be true when init is given")
        return self

    @property
    def n_pairs(self) -> int:
        """Class-target pairs: the size of the incidence matrix, and what one iteration costs."""
        return sum(len(c.targets) for c in self.classes)


class AbundanceParamsOut(BaseModel):
    targets: list[str] = Field(description="target names, in input order (every list below is in this order)")
    lengths: list[float] = Field(description="effective lengths, as given")
    est_counts: list[float] = Field(description="expected reads per target (rho x total reads)")
    tpm: list[float] = Field(description="transcripts per million: est_counts / length, scaled to sum to 10^6")
    rho: list[float] = Field(description="fraction of reads per target (sums to 1)")


class AbundanceParamsIn(BaseModel):
    """A kept model: target names and effective lengths, and rho (est_counts and tpm, if sent, are ignored)."""

    model_config = REQUEST_CONFIG

    targets: list[TargetName] = Field(min_length=1, description="target names, unique")
    lengths: list[Annotated[float, Field(gt=0, le=1e12)]] = Field(min_length=1, description="effective lengths")
    rho: list[Fraction] = Field(min_length=1, description="fraction of reads per target, summing to 1")
    est_counts: list[Annotated[float, Field(ge=0)]] | None = Field(None, description="ignored (a result's own)")
    tpm: list[Annotated[float, Field(ge=0)]] | None = Field(None, description="ignored (a result's own)")


class AbundanceModelImport(BaseModel):
    """Transcript abundances to keep as a model (a fit result's params paste in as they are)."""

    model_config = REQUEST_CONFIG

    kind: Literal["abundances"]
    params: AbundanceParamsIn


class AbundanceFitResult(FitResultBase):
    model: Literal["abundances"] = "abundances"
    params: AbundanceParamsOut
    log_likelihood: float = Field(
        description="sum_c count_c log sum_{t in c} rho_t / length_t at params (no constant dropped or added)"
    )
    n_reads: int = Field(description="total count over the classes: what tol's mean log-likelihood is taken per")


# Worked request examples shown in Swagger UI (their results: service/schemas/result_examples/abundances.json).
THREE_TRANSCRIPTS: dict[str, Any] = {
    "targets": [{"name": "t1", "length": 1500.0}, {"name": "t2", "length": 900.0}, {"name": "t3", "length": 2000.0}],
    "classes": [
        {"targets": ["t1"], "count": 120},
        {"targets": ["t1", "t2"], "count": 300},
        {"targets": ["t2", "t3"], "count": 80},
    ],
}

ABUNDANCE_EXAMPLES: dict[str, dict[str, Any]] = {
    "three_transcripts": {
        "summary": "three transcripts, three equivalence classes (the API's example)",
        "description": "t3 is seen only together with the shorter t2, so the maximum gives it no reads.",
        "value": {**THREE_TRANSCRIPTS, "tol": 1e-10, "max_iter": 1000, "seed": 0},
    },
    "gene_with_isoforms": {
        "summary": "two isoforms sharing exons, plus an unrelated gene",
        "description": "Reads on the shared exons are split by what the unique exons say about each isoform.",
        "value": {
            "targets": [
                {"name": "geneA-201", "length": 1800.0},
                {"name": "geneA-202", "length": 1200.0},
                {"name": "geneB-201", "length": 2400.0},
            ],
            "classes": [
                {"targets": ["geneA-201"], "count": 210},
                {"targets": ["geneA-202"], "count": 95},
                {"targets": ["geneA-201", "geneA-202"], "count": 640},
                {"targets": ["geneB-201"], "count": 400},
            ],
            "tol": 1e-10,
            "max_iter": 1000,
            "trace": "none",
            "seed": 0,
        },
    },
}
