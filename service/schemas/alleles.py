"""Request and result of allele frequency estimation from phenotype counts."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, model_validator

from service.schemas.common import REQUEST_CONFIG, FitOptions, FitResultBase
from service.schemas.uncertainty import BootstrapOption, StandardErrorsOption, WithStandardErrors

AlleleName = Annotated[str, Field(min_length=1, max_length=64)]
Genotype = Annotated[list[AlleleName], Field(min_length=2, max_length=2, description='two alleles, e.g. ["C", "T"]')]
Frequency = Annotated[float, Field(ge=0, le=1)]


class Phenotype(BaseModel):
    model_config = REQUEST_CONFIG

    name: str = Field(min_length=1, max_length=128, description="what is seen, e.g. carbonaria")
    count: int = Field(ge=0, le=10**15, description="how many individuals show it")
    genotypes: list[Genotype] = Field(
        min_length=1, description="the genotypes that show this phenotype (each genotype in exactly one phenotype)"
    )


class PhenotypeDefinition(BaseModel):
    """A phenotype of a kept model: its name and genotypes (no count)."""

    model_config = REQUEST_CONFIG

    name: str = Field(min_length=1, max_length=128)
    genotypes: list[Genotype] = Field(min_length=1)


class AlleleInit(BaseModel):
    model_config = REQUEST_CONFIG

    frequencies: list[Frequency] = Field(min_length=1, description="one per allele, >= 0, summing to 1")


def _distinct_names(names: list[str], what: str) -> None:
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{what} names {', '.join(map(repr, twice))} more than once")


class AlleleFitRequest(FitOptions, StandardErrorsOption, BootstrapOption):
    """Phenotype counts of a sample, and which genotypes show each phenotype (Hardy-Weinberg proportions)."""

    alleles: list[AlleleName] = Field(min_length=1, description='the alleles, e.g. ["C", "I", "T"]')
    phenotypes: list[Phenotype] = Field(
        min_length=1,
        description="counts per phenotype; together the phenotypes must cover every genotype of the alleles once",
    )
    init: AlleleInit | None = Field(
        None, description="starting frequencies (n_init must then be 1); null: a uniform draw from the simplex"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _distinct_names(self.alleles, "alleles")
        _distinct_names([p.name for p in self.phenotypes], "phenotypes")
        if self.init is not None:
            if len(self.init.frequencies) != len(self.alleles):
                raise ValueError(
                    f"init.frequencies has {len(self.init.frequencies)} values, expected one per allele "
                    f"({len(self.alleles)})"
                )
            if self.n_init != 1:
                raise ValueError("n_init must be 1 when init is given (every start would be the same)")
        return self

    @property
    def n_individuals(self) -> int:
        return sum(p.count for p in self.phenotypes)


class AlleleParamsOut(BaseModel):
    frequencies: list[float] = Field(description="p per allele, in the order of alleles")
    genotype_frequencies: dict[str, float] = Field(
        description='Hardy-Weinberg genotype probabilities, "A/B" keys in the order of alleles (upper triangle)'
    )


class AlleleParamsIn(BaseModel):
    model_config = REQUEST_CONFIG

    frequencies: list[Frequency] = Field(min_length=1, description="one per allele, summing to 1")


class AlleleModelImport(BaseModel):
    """Allele frequencies and the phenotypes they are seen through, to keep as a model."""

    model_config = REQUEST_CONFIG

    kind: Literal["alleles"]
    alleles: list[AlleleName] = Field(min_length=1)
    phenotypes: list[PhenotypeDefinition] = Field(min_length=1)
    params: AlleleParamsIn

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        _distinct_names(self.alleles, "alleles")
        _distinct_names([p.name for p in self.phenotypes], "phenotypes")
        return self


class AlleleFitResult(FitResultBase, WithStandardErrors):
    model: Literal["alleles"] = "alleles"
    alleles: list[str] = Field(description="the alleles, in the order of params.frequencies")
    params: AlleleParamsOut
    log_likelihood: float = Field(description="sum over phenotypes of count x log P(phenotype) (no coefficient)")
    n_observations: int = Field(description="individuals counted (the sum of the counts)")
    genotype_posteriors: dict[str, dict[str, float]] = Field(
        description="per phenotype, P(genotype | phenotype) at params: how its count splits over its genotypes"
    )


def _moth(genotypes: list[list[str]], name: str, count: int) -> dict[str, Any]:
    return {"name": name, "count": count, "genotypes": genotypes}


# Worked request examples shown in Swagger UI (their results: service/schemas/result_examples/alleles.json).
ALLELE_EXAMPLES: dict[str, dict[str, Any]] = {
    "peppered_moth": {
        "summary": "The peppered moth: carbonaria / insularia / typica, alleles C > I > T",
        "description": "622 moths; EM converges to p(C) = 0.07084, p(I) = 0.18874, p(T) = 0.74043.",
        "value": {
            "alleles": ["C", "I", "T"],
            "phenotypes": [
                _moth([["C", "C"], ["C", "I"], ["C", "T"]], "carbonaria", 85),
                _moth([["I", "I"], ["I", "T"]], "insularia", 196),
                _moth([["T", "T"]], "typica", 341),
            ],
            "init": {"frequencies": [0.333, 0.333, 0.334]},
            "tol": 1e-10,
            "seed": 0,
        },
    },
    "abo_blood_groups": {
        "summary": "ABO blood groups: A and B codominant, O recessive",
        "value": {
            "alleles": ["A", "B", "O"],
            "phenotypes": [
                _moth([["A", "A"], ["A", "O"]], "A", 186),
                _moth([["B", "B"], ["B", "O"]], "B", 38),
                _moth([["A", "B"]], "AB", 13),
                _moth([["O", "O"]], "O", 284),
            ],
            "n_init": 3,
            "seed": 0,
            "tol": 1e-10,
        },
    },
}
