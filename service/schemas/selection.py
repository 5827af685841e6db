"""Model selection over K x covariance types for Gaussian mixtures: the request and its result."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.em.gaussian_checks import CovarianceType, InitMethod, WorkingDtype
from service.schemas.common import REQUEST_CONFIG, FitOptions
from service.schemas.points import PointsWithMissing

Criterion = Literal["bic", "aic", "icl"]

# More candidates than this in one selection is a 422: each is a whole fit, queued on the workers together.
MAX_CANDIDATES = 64


class KRange(BaseModel):
    model_config = REQUEST_CONFIG

    min: int = Field(1, ge=1)
    max: int = Field(6, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"n_components.min ({self.min}) is above n_components.max ({self.max})")
        return self


class GaussianSelectRequest(FitOptions):
    """A point cloud, and the mixtures to choose among: every K x covariance type is fitted, the best kept."""

    model_config = REQUEST_CONFIG | ConfigDict(arbitrary_types_allowed=True)

    points: PointsWithMissing | None = Field(
        None, description="the point cloud (or name an uploaded one as dataset); null marks a missing coordinate"
    )
    n_components: list[int] | KRange = Field(
        default_factory=KRange,
        description='the K values to try: a list, or {"min", "max"} (default 1..6)',
    )
    covariance_types: list[CovarianceType] = Field(["full"], min_length=1, description="the covariance types to try")
    criterion: Criterion = Field(
        "bic", description="what picks the best: bic, aic or icl (BIC + 2 x the responsibilities' entropy); lower wins"
    )
    reg_covar: float = Field(1e-6, ge=0, description="added to covariance diagonals for stability")
    dtype: WorkingDtype = Field("float64", description="precision of the passes over the points")
    init_method: InitMethod = Field("kmeans", description="how each start is seeded (as a fit's init.method)")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.points is None) == (self.dataset is None):
            raise ValueError("give exactly one of points or dataset")
        ks = self.n_components
        # Counted before any list is made: {"max": 10^18} must be a 422, not a range of 10^18 values.
        n_ks = ks.max - ks.min + 1 if isinstance(ks, KRange) else len(set(ks))
        if not isinstance(ks, KRange) and (not ks or min(ks) < 1):
            raise ValueError("n_components must list K values >= 1")
        candidates = n_ks * len(set(self.covariance_types))
        if candidates > MAX_CANDIDATES:
            raise ValueError(f"{candidates} candidates (K values x covariance types); at most {MAX_CANDIDATES}")
        return self

    def k_values(self) -> list[int]:
        ks = self.n_components
        values = list(range(ks.min, ks.max + 1)) if isinstance(ks, KRange) else ks
        return sorted(set(values))

    def types(self) -> list[CovarianceType]:
        return list(dict.fromkeys(self.covariance_types))  # in the order given, once each

    def points_array(self) -> Any:
        return self.points if self.points is not None else self.dataset_array()


class Candidate(BaseModel):
    n_components: int
    covariance_type: CovarianceType
    log_likelihood: float
    bic: float = Field(description="-2 log L + p log n (lower is better; mclust's BIC is its negative)")
    aic: float = Field(description="-2 log L + 2 p")
    icl: float = Field(description="BIC + 2 x the entropy of the responsibilities (lower is better)")
    n_parameters: int
    converged: bool
    n_iter: int
    stop_reason: str
    warnings: list[str]
    degenerate: bool = Field(
        description="a component collapsed onto points sharing one value (its likelihood is unbounded): such a "
        "candidate is best only if every candidate is"
    )
    model_id: str = Field(description="this candidate's kept model")


class BestCandidate(BaseModel):
    n_components: int
    covariance_type: CovarianceType
    model_id: str


class SelectionResult(BaseModel):
    model: Literal["gaussian_selection"] = "gaussian_selection"
    criterion: Criterion
    best: BestCandidate
    candidates: list[Candidate] = Field(description="every K x covariance type, by covariance type then K")
    warnings: list[str]
    job_id: str
    elapsed_ms: float = Field(description="server time from the first candidate's start to the last's end")


SELECT_EXAMPLES: dict[str, dict[str, Any]] = {
    "three_groups": {
        "summary": "2-D: which K (1..3) and covariance type (full or tied) explain three groups best?",
        "value": {
            "points": [
                [-0.77, -0.24], [-0.49, -0.4], [0.53, -0.4], [-0.02, 0.44], [-0.29, -0.06], [0.06, 0.03],
                [-0.61, 0.04], [0.68, -0.77], [5.43, 5.06], [4.68, 6.0], [5.38, 4.4], [5.04, 5.29], [4.91, 5.34],
                [4.97, 5.33], [5.72, 4.66], [5.1, 4.77], [0.06, 4.41], [-0.29, 4.9], [0.45, 5.57], [-0.66, 4.6],
                [0.32, 4.0], [-0.23, 4.95], [0.63, 5.34], [-0.16, 4.82],
            ],
            "n_components": {"min": 1, "max": 3},
            "covariance_types": ["full", "tied"],
            "n_init": 3,
            "seed": 0,
        },
    },
}  # fmt: skip
