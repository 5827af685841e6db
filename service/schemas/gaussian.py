"""Request and result of the Gaussian mixture fit."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas.common import REQUEST_CONFIG, FitOptions, FitResultBase
from service.schemas.points import Points

CovarianceType = Literal["full", "diag", "spherical", "tied"]
Matrix = list[list[float]]


class GaussianInit(BaseModel):
    model_config = REQUEST_CONFIG

    method: Literal["kmeans", "kmeans++", "random_from_data", "random"] = Field(
        "kmeans",
        description="fills what is not given: kmeans (k-means seeded by k-means++), kmeans++ (the seeding "
        "alone), random_from_data (K random points), random (random responsibilities)",
    )
    means: list[float] | Matrix | None = Field(None, description="K x d (for 1-D data a flat list of K numbers)")
    covariances: float | list[float] | Matrix | list[Matrix] | None = Field(
        None,
        description="full K x d x d, diag K x d, spherical K, tied d x d (for 1-D data a flat list of K numbers); "
        "used as given: reg_covar is not added",
    )
    weights: list[float] | None = Field(None, description="K weights >= 0 summing to 1")


class GaussianFitRequest(FitOptions):
    """A point cloud to explain as K normal groups."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True)

    points: Points
    n_components: int = Field(2, ge=1, description="K, the number of normal groups")
    covariance_type: CovarianceType = Field("full", description="as scikit-learn's GaussianMixture defines them")
    init: GaussianInit | None = None
    reg_covar: float = Field(1e-6, ge=0, description="added to covariance diagonals for stability")
    dtype: Literal["float64", "float32"] = Field(
        "float64",
        description="precision of the passes over the points: float32 halves their memory traffic and runs "
        "faster on large clouds; parameters and sums stay float64. Along the same path its results agree with "
        "float64's to about 1e-5 relative; a tol below ~1e-7 is under its rounding noise and may stop a fit "
        "early or never",
    )
    return_labels: bool = Field(True, description="include the most probable component per point")
    return_responsibilities: bool = Field(False, description="include the n x K responsibilities")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.n_init > 1 and self.init is not None and self.init.means is not None:
            raise ValueError("n_init must be 1 when init.means is given (every start would be the same)")
        return self


class GaussianParamsOut(BaseModel):
    weights: list[float]
    means: Matrix = Field(description="K x d")
    covariances: list[float] | Matrix | list[Matrix] = Field(
        description="full K x d x d, diag K x d, spherical K, tied d x d"
    )
    stds: list[float] | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="1-D data only: the standard deviation of each group",
    )


class GaussianFitResult(FitResultBase):
    model: Literal["gaussian"] = "gaussian"
    params: GaussianParamsOut
    log_likelihood: float = Field(description="total observed-data log-likelihood at params")
    mean_log_likelihood: float = Field(description="log_likelihood per point")
    bic: float = Field(description="Bayesian information criterion (lower is better)")
    aic: float = Field(description="Akaike information criterion (lower is better)")
    n_parameters: int
    labels: list[int] | None = Field(description="most probable component per point (null unless requested)")
    responsibilities: list[list[float]] | None = Field(description="n x K (null unless requested)")
