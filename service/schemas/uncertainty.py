"""The standard-errors and bootstrap options and the result fields they add (coins, alleles, gaussian)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.schemas.common import REQUEST_CONFIG


class StandardErrorsOption(BaseModel):
    standard_errors: bool = Field(
        False,
        description="add standard errors of the estimates, from the observed information at the returned "
        "parameters (exact, by Louis's identity), and their covariance",
    )


class BootstrapRequest(BaseModel):
    model_config = REQUEST_CONFIG

    replicates: int = Field(
        ge=2, description="B, the number of refits of resampled data (the server's cap: EM_MAX_BOOTSTRAP_REPLICATES)"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="the resamples' seed: the same seed, the same intervals")
    level: float = Field(
        0.95, gt=0, lt=1, description="the intervals' coverage: percentiles (1 - level)/2 and (1 + level)/2"
    )


class BootstrapOption(BaseModel):
    bootstrap: BootstrapRequest | None = Field(
        None,
        description="jobs only: after the fit, refit B resamples of the data (spread over the fit workers, each "
        "started from the fitted parameters, components matched to the fit) and add percentile intervals. The "
        "job's event stream sends a `replicates` event as each batch of refits ends",
    )


class BootstrapResult(BaseModel):
    replicates: int = Field(description="B, as asked")
    seed: int
    level: float
    succeeded: int = Field(description="refits that succeeded (the intervals are over these)")
    lower: dict[str, Any] | None = Field(
        description="the (1 - level)/2 percentile of each parameter over the refits, in the shape of params "
        "(null with fewer than 2 refits)"
    )
    upper: dict[str, Any] | None = Field(description="the (1 + level)/2 percentile, in the shape of params")
    standard_errors: dict[str, Any] | None = Field(
        description="the refits' standard deviation of each parameter, in the shape of params"
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
    bootstrap: BootstrapResult | None = Field(
        None, description="percentile intervals from refits of resampled data (jobs asked for bootstrap; else null)"
    )
