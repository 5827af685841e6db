"""Options every fit request carries and the result fields every model shares."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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

    def options_summary(self) -> dict[str, Any]:
        """The common options as a job record shows them."""
        return self.model_dump(include={"max_iter", "tol", "n_init", "seed", "trace", "time_limit_s"})


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
    elapsed_ms: float = Field(description="server time spent fitting")


class Message(BaseModel):
    """An error that is not about one field: ``{"detail": "what went wrong"}``."""

    detail: str
