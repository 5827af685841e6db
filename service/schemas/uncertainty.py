"""The standard-errors option and the result fields it adds (coins, alleles, gaussian)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StandardErrorsOption(BaseModel):
    standard_errors: bool = Field(
        False,
        description="add standard errors of the estimates, from the observed information at the returned "
        "parameters (exact, by Louis's identity), and their covariance",
    )


class CovarianceOfEstimates(BaseModel):
    parameters: list[str] = Field(
        description='the free parameters, in order ("weights[0]", "means[1][0]", ...): weights lose their last '
        "entry, which is 1 minus the others; symmetric matrices their lower triangle"
    )
    matrix: list[list[float]] = Field(description="the inverse of the observed information on those parameters")


class WithStandardErrors(BaseModel):
    standard_errors: dict[str, Any] | None = Field(
        None,
        description="standard errors in the shape of params (null entries: fixed, not estimated); null when not "
        "asked for, or when the information is singular or the fit did not converge (a warning says which)",
    )
    covariance_of_estimates: CovarianceOfEstimates | None = Field(
        None, description="the estimates' covariance on the free parameters (null when standard_errors is)"
    )
