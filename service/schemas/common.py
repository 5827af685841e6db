"""Options every fit request carries and the result fields every model shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from service.datasets.parse import map_points
from service.em.loop import StopReason, TraceMode

# Requests: unknown fields are typos worth a 422; NaN/Infinity are never numbers here; strict, so a boolean
# is never taken for a number (``"n_components": true``) nor a number for a boolean (``"return_labels": 0``).
REQUEST_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class FitOptions(BaseModel):
    """The common fit options (flat on every fit request)."""

    model_config = REQUEST_CONFIG

    max_iter: int = Field(100, ge=1, description="EM iterations per start at most (the server caps it)")
    tol: float = Field(
        1e-6,
        ge=0,
        description="stop when the change of the mean log-likelihood per observation between two iterations "
        "is <= tol (0 = run to max_iter)",
    )
    n_init: int = Field(1, ge=1, description="independent starts; the best final log-likelihood is returned")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="seeds every random choice: same request + same seed => same answer",
    )
    trace: TraceMode = Field("loglik", description="what the iteration trace records for the returned start")
    time_limit_s: float | None = Field(
        None,
        gt=0,
        description="wall-clock budget for the fit (null = the server default; the server caps it)",
    )
    dataset: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="the id of an uploaded dataset (POST /v1/datasets) to fit, instead of sending the data",
    )
    # The named dataset (its array, memory-mapped, and its file), attached by the API once it has checked the
    # dataset is the caller's.
    _dataset_array: NDArray[np.floating[Any]] | None = PrivateAttr(None)
    _dataset_file: Path | None = PrivateAttr(None)

    def attach_dataset(self, file: Path) -> None:
        self._dataset_array, self._dataset_file = map_points(file), file

    def dataset_file(self) -> Path | None:
        return self._dataset_file

    def dataset_array(self) -> NDArray[np.floating[Any]]:
        assert self._dataset_array is not None, "the API attaches a named dataset before the request is used"
        return self._dataset_array

    def options_summary(self) -> dict[str, Any]:
        """The common options as a job record shows them (and the dataset fitted, when one is named)."""
        summary = self.model_dump(include={"max_iter", "tol", "n_init", "seed", "trace", "time_limit_s"})
        return summary | ({"dataset": self.dataset} if self.dataset is not None else {})


class TraceEntry(BaseModel):
    iteration: int
    log_likelihood: float
    delta: float = Field(description="change of the mean log-likelihood per observation since the state before")
    params: dict[str, Any] | None = Field(
        None, exclude_if=lambda v: v is None, description="present only when trace == 'params'"
    )


class Restart(BaseModel):
    seed: int = Field(description="the seed this start used: n_init=1 with this seed replays it alone")
    log_likelihood: float
    n_iter: int
    converged: bool


class FitResultBase(BaseModel):
    """Fields every fit result carries."""

    n_iter: int
    converged: bool = Field(description="whether tol was met")
    stop_reason: StopReason
    trace: list[TraceEntry]
    restarts: list[Restart]
    warnings: list[str]
    job_id: str
    model_id: str = Field(
        description="the model this fit kept (GET /v1/models/{model_id}, then predict, score, sample); "
        "the same string as job_id"
    )
    elapsed_ms: float = Field(description="server time spent fitting")


class Message(BaseModel):
    """An error that is not about one field: ``{"detail": "what went wrong"}``."""

    detail: str


class Problem(BaseModel):
    loc: list[str | int] = Field(description="where: body, then the field's path")
    msg: str = Field(description="what is wrong, in words a caller can act on")
    type: str


class Problems(BaseModel):
    """A 422's body, as FastAPI shapes it for routes that declare their body themselves (uploads)."""

    detail: list[Problem]
