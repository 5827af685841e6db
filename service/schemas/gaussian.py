"""Request and result of the Gaussian mixture fit."""

from __future__ import annotations

from typing import Any, Literal, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.em.gaussian_checks import CovarianceType, InitMethod, WorkingDtype
from service.schemas.common import REQUEST_CONFIG, FitOptions, FitResultBase
from service.schemas.points import PointsWithMissing
from service.schemas.uncertainty import BootstrapOption, StandardErrorsOption, WithStandardErrors

Matrix = list[list[float]]


class GaussianInit(BaseModel):
    model_config = REQUEST_CONFIG

    method: InitMethod = Field(
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


class GaussianFitRequest(FitOptions, StandardErrorsOption, BootstrapOption):
    """A point cloud to explain as K normal groups."""

    model_config = REQUEST_CONFIG | ConfigDict(arbitrary_types_allowed=True)

    points: PointsWithMissing | None = Field(
        None,
        description="the point cloud (or name an uploaded one as dataset); null marks a missing coordinate of a "
        "row, and the fit maximises the likelihood of what is observed",
    )
    n_components: int = Field(2, ge=1, description="K, the number of normal groups")
    covariance_type: CovarianceType = Field("full", description="as scikit-learn's GaussianMixture defines them")
    init: GaussianInit | None = None
    reg_covar: float = Field(1e-6, ge=0, description="added to covariance diagonals for stability")
    dtype: WorkingDtype = Field(
        "float64",
        description="precision of the passes over the points: float32 halves their memory traffic and runs "
        "faster on large clouds; parameters and sums stay float64. Along the same path its results agree with "
        "float64's to about 1e-5 relative; a tol below ~1e-7 is under its rounding noise and may stop a fit "
        "early or never",
    )
    return_labels: bool = Field(True, description="include the most probable component per point")
    return_responsibilities: bool = Field(False, description="include the n x K responsibilities")
    return_imputed: bool = Field(
        False,
        description="include the points with each missing coordinate replaced by its conditional mean under the "
        "fitted mixture (observed coordinates as given)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.points is None) == (self.dataset is None):
            raise ValueError("give exactly one of points or dataset")
        if self.n_init > 1 and self.init is not None and self.init.means is not None:
            raise ValueError("n_init must be 1 when init.means is given (every start would be the same)")
        return self

    def points_array(self) -> NDArray[np.floating[Any]]:
        """The points sent, or those of the dataset named."""
        return self.points if self.points is not None else self.dataset_array()


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


class GaussianParamsIn(BaseModel):
    model_config = REQUEST_CONFIG

    weights: list[float] = Field(min_length=1, description="K weights >= 0 summing to 1")
    means: list[float] | Matrix = Field(min_length=1, description="K x d (for 1-D data a flat list of K numbers)")
    covariances: float | list[float] | Matrix | list[Matrix] = Field(
        description="full K x d x d, diag K x d, spherical K, tied d x d (for 1-D data a flat list of K numbers)"
    )
    stds: list[float] | None = Field(None, description="as a 1-D result shows them; ignored (the covariances say)")


class GaussianModelImport(BaseModel):
    """A Gaussian mixture's parameters, to keep as a model (checked as a fit's init is)."""

    model_config = REQUEST_CONFIG

    kind: Literal["gaussian"]
    covariance_type: CovarianceType = "full"
    params: GaussianParamsIn


class GaussianFitResult(FitResultBase, WithStandardErrors):
    model: Literal["gaussian"] = "gaussian"
    params: GaussianParamsOut
    log_likelihood: float = Field(description="total observed-data log-likelihood at params")
    mean_log_likelihood: float = Field(description="log_likelihood per point")
    bic: float = Field(description="Bayesian information criterion (lower is better)")
    aic: float = Field(description="Akaike information criterion (lower is better)")
    n_parameters: int
    labels: list[int] | None = Field(description="most probable component per point (null unless requested)")
    responsibilities: list[list[float]] | None = Field(description="n x K (null unless requested)")
    imputed: Matrix | None = Field(
        None, description="the points, missing coordinates replaced by their conditional means (null unless requested)"
    )
    n_missing: int = Field(0, description="missing coordinates among the points (null entries)")


# Worked request examples shown in Swagger UI (their results: service/schemas/result_examples/gaussian.json).
GAUSSIAN_EXAMPLES: dict[str, dict[str, Any]] = {
    "two_groups_1d": {
        "summary": "1-D: two normal groups of 15 points (means -2 and 3)",
        "description": "Estimates each group's weight, mean and standard deviation (params.stds).",
        "value": {
            "points": [
                -2.0,
                -1.85,
                -2.14,
                -2.45,
                -2.23,
                -2.5,
                -1.97,
                -1.33,
                -2.25,
                -2.31,
                -1.76,
                -1.82,
                -1.95,
                -2.47,
                -2.01,
                3.7,
                1.66,
                2.54,
                1.1,
                1.71,
                1.16,
                2.76,
                1.73,
                3.27,
                3.16,
                2.81,
                0.48,
                2.46,
                2.95,
                3.11,
            ],
            "n_components": 2,
            "seed": 0,
        },
    },
    "three_clusters_2d": {
        "summary": "2-D: three clusters around (0,0), (5,5), (0,5)",
        "value": {
            "points": [
                [-0.77, -0.24],
                [-0.49, -0.4],
                [0.53, -0.4],
                [-0.02, 0.44],
                [-0.29, -0.06],
                [0.06, 0.03],
                [-0.61, 0.04],
                [0.68, -0.77],
                [5.43, 5.06],
                [4.68, 6.0],
                [5.38, 4.4],
                [5.04, 5.29],
                [4.91, 5.34],
                [4.97, 5.33],
                [5.72, 4.66],
                [5.1, 4.77],
                [0.06, 4.41],
                [-0.29, 4.9],
                [0.45, 5.57],
                [-0.66, 4.6],
                [0.32, 4.0],
                [-0.23, 4.95],
                [0.63, 5.34],
                [-0.16, 4.82],
            ],
            "n_components": 3,
            "covariance_type": "full",
            "n_init": 3,
            "seed": 42,
        },
    },
    "missing_values": {
        "summary": "2-D with missing coordinates (null): fitted on what is observed, gaps filled after",
        "description": "True EM over the observed coordinates; return_imputed gives each gap its conditional mean.",
        "value": {
            "points": [
                [0.1, 0.2],
                [None, 0.4],
                [0.3, None],
                [-0.2, 0.1],
                [0.0, -0.3],
                [4.0, 4.1],
                [4.2, None],
                [None, 3.9],
                [3.8, 4.3],
                [4.1, 3.7],
            ],
            "n_components": 2,
            "seed": 0,
            "return_imputed": True,
        },
    },
}
