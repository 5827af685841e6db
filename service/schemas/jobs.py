"""The job resource: status, progress, and the fit result once there is one.

``Job.kind`` and the ``Job.result`` union depend on which model families exist, so the model is built
by :func:`job_schema` from the registry (``service.families.registry``), never edited by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, create_model

from service.jobs.models import JobStatus


class JobProgress(BaseModel):
    start: int = Field(description="which start (0-based) the iteration belongs to")
    iteration: int
    log_likelihood: float


class JobError(BaseModel):
    type: str = Field(description="interrupted, worker_died, time_limit, out_of_memory, invalid_request, ...")
    message: str


def job_schema(kinds: Sequence[str], results: Sequence[type[BaseModel]]) -> type[BaseModel]:
    """The ``Job`` model for these families: ``kind`` one of ``kinds``, ``result`` one of ``results`` (by ``model``)."""
    kind = Literal[tuple(kinds)]  # type: ignore[valid-type]
    result = Annotated[Union[tuple(results)], Field(discriminator="model")]  # type: ignore[valid-type]  # noqa: UP007
    fields: dict[str, Any] = {
        "id": (str, ...),
        "kind": (kind, ...),
        "status": (JobStatus, ...),
        "created_at": (datetime, ...),
        "started_at": (datetime | None, ...),
        "finished_at": (datetime | None, ...),
        "progress": (JobProgress | None, ...),
        "result": (
            result | None,
            Field(description="the fit result once succeeded (left out of listings: fetch the job for it)"),
        ),
        "error": (JobError | None, ...),
        "request": (dict[str, Any], Field(description="a summary of the request (sizes and options, not the data)")),
    }
    return create_model("Job", __doc__="A fit run in the background: its status, progress and result.", **fields)


def job_page_schema(job: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        "JobPage",
        __doc__="One page of jobs, newest first.",
        items=(list[job], Field(description="newest first")),  # type: ignore[valid-type]
        next_cursor=(str | None, Field(description="pass as cursor for the next page; null on the last page")),
    )
