"""Service settings: one pydantic-settings class, read from ``EM_*`` environment variables at start-up."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Limits, workers and storage. Fixed once the app is built; tests pass their own instance."""

    model_config = SettingsConfigDict(env_prefix="EM_", frozen=True)

    # Per-fit caps: a request above one is answered 422 naming the cap.
    max_iter_cap: int = Field(10_000, ge=1, description="largest max_iter a request may ask for")
    n_init_cap: int = Field(100, ge=1, description="largest n_init a request may ask for")
    default_time_limit_s: float = Field(60.0, gt=0, description="time budget of a fit that names none")
    time_limit_cap_s: float = Field(6 * 3600.0, gt=0, description="largest time_limit_s a request may ask for")
    max_points: int = Field(2_000_000, ge=1, description="most points (or experiments) in one fit")
    max_features: int = Field(1024, ge=1, description="most dimensions of a point")
    max_components: int = Field(256, ge=1, description="most mixture components / coins")
    max_targets: int = Field(
        200_000,
        ge=1,
        description="most targets (transcripts) in an abundance fit or model: its components, which a "
        "transcriptome counts in tens of thousands (its classes and class-target pairs count as points)",
    )
    max_cells: int = Field(
        200_000_000, ge=1, description="most points x dimensions x components in one fit (memory and time)"
    )

    max_standard_error_cells: int = Field(
        10_000_000_000,
        ge=1,
        description="most observations x free parameters^2 of a standard-error computation (its time: about a "
        "second per 10^10 on one core)",
    )
    max_bootstrap_replicates: int = Field(
        1000, ge=2, description="most refits a job's bootstrap may ask for (each is a whole fit of the data)"
    )
    max_result_mb: int = Field(
        256, ge=1, description="largest result a fit may produce (estimated before it runs; 422 above it)"
    )
    worker_memory_mb: int | None = Field(
        None,
        ge=64,
        description="memory limit of each fit worker process (RLIMIT_DATA); a fit estimated to need more is a "
        "422, one that grows past it fails with error.type memory_limit. Default: 80% of the machine's memory "
        "shared among the workers",
    )
    inline_fit_budget: int = Field(
        500_000,
        ge=0,
        description="synchronous fits whose work (max_iter x n_init x (observations x components + overhead)) is "
        "at most this skip the job machinery: solved by a worker that runs no job, or on the event loop when every "
        "worker is busy (0: never); a small fit then costs its arithmetic, not a job's bookkeeping",
    )

    data_dir: Path = Field(Path("data"), description="where stored jobs live")

    # Jobs: worker processes, the queue in front of them, and how long records are kept.
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, description="fit worker processes")
    queue_size: int = Field(64, ge=1, description="jobs waiting for a worker before new ones get 503")
    job_retention_s: float = Field(7 * 24 * 3600, gt=0, description="how long finished jobs are kept")
    dataset_retention_s: float = Field(
        30 * 24 * 3600, gt=0, description="how long a dataset is kept after its upload or its last fit"
    )
    model_retention_s: float = Field(
        30 * 24 * 3600, gt=0, description="how long a kept model is kept after its fit, import or last use"
    )
    max_models: int = Field(
        10_000, ge=1, description="kept models per API key; past it the least recently used are forgotten"
    )
    store_max_mb: int | None = Field(
        2048, ge=1, description="past this size the oldest finished jobs are evicted (None: only retention)"
    )
    default_job_time_limit_s: float = Field(3600.0, gt=0, description="time budget of an async job that names none")

    # Where jobs, models and datasets live, and where fits run (README "Scaling out").
    backend: Literal["local", "distributed"] = Field(
        "local",
        description="local: SQLite under data_dir and this host's worker processes; distributed: PostgreSQL "
        "(database_url), a Redis queue (redis_url) and `python -m service.worker` processes on any machine",
    )
    database_url: str | None = Field(
        None, description="PostgreSQL of the distributed backend, e.g. postgresql://em@db:5432/em"
    )
    redis_url: str | None = Field(None, description="Redis of the distributed backend, e.g. redis://redis:6379/0")
    queue_name: str = Field("em-fits", description="the RQ queue the distributed backend's fits wait in")
    dask_scheduler: str | None = Field(
        None, description="a Dask scheduler (tcp://host:8786) for data-parallel fits of large stored datasets"
    )
    dask_min_rows: int | None = Field(
        None, ge=1, description="a distributed job fitting a stored dataset of more rows than this runs on Dask"
    )
    storage_url: str | None = Field(
        None,
        description="where Dask workers read stored datasets (a shared path or an fsspec URL such as s3://bucket/"
        "datasets; default: the datasets folder under data_dir)",
    )
    queue_lost_after_s: float = Field(
        30.0, gt=0, description="a queued job that Redis no longer holds is failed (queue_lost) past this age"
    )
    reaper_interval_s: float = Field(
        2.0, gt=0, description="how often a replica fails running jobs whose worker stopped beating"
    )

    # HTTP edge: authentication, body size, browsers, logs.
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated keys; when set, /v1/* needs one (health stays open)"
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated keys that are valid keys too and may see every tenant's jobs",
    )
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1, description="larger request bodies get 413")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request headers larger in all (names and values) get 431"
    )
    max_headers: int = Field(100, ge=1, description="requests with more headers get 431")
    body_offload_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="JSON bodies at least this large are parsed and validated in a helper process, so the event "
        "loop keeps answering meanwhile (0: never)",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS ('*' for any)"
    )
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    opentelemetry: bool = Field(
        False,
        description="FastAPI's OpenTelemetry spans, metrics and logs, for a process whose OpenTelemetry SDK is "
        "configured (e.g. by opentelemetry-instrument); off, requests skip the check (~8 µs each)",
    )

    @property
    def worker_memory_limit_mb(self) -> int | None:
        """``worker_memory_mb``, or its default from this machine's memory (None where that cannot be read)."""
        if self.worker_memory_mb is not None:
            return self.worker_memory_mb
        total = _machine_memory_bytes()
        return None if total is None else max(256, int(0.8 * total / 2**20 / self.workers))

    @field_validator("api_keys", "admin_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


@cache
def _machine_memory_bytes() -> int | None:
    """This machine's memory (None where it cannot be read); asked once: every fit request checks against it."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
