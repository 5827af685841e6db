"""Datasets: uploaded once (JSON, NPY, Arrow, CSV), read, listed and deleted by id.

An upload is streamed to a file as it arrives (never held whole in memory), hashed on the way, then read and
checked off the event loop; a malformed file is a 422 naming what is wrong.
"""

from __future__ import annotations

import errno
import hashlib
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect

from service.api.deps import access_of, get_access, services
from service.api.routing import parse_limiter
from service.api.security import principal_of
from service.datasets.ingest import ARROW, CONTENT_TYPES, CSV, JSON, NPY, ingest
from service.datasets.parse import MalformedData
from service.datasets.store import DatasetRecord, DatasetStore
from service.em.errors import EMError
from service.families.base import Family
from service.jobs.models import Access, StorageError, StorageFull, new_job_id
from service.schemas.common import FitOptions, Message, Problems
from service.schemas.datasets import Dataset, DatasetJSON, DatasetPage

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such dataset", "model": Message}}

# What Swagger UI offers to send (each is posted by a test).
UPLOAD_EXAMPLES: dict[str, dict[str, Any]] = {
    "points": {
        "summary": "a 2-D point cloud of two groups",
        "value": {"points": [[0.1, 0.2], [0.3, -0.1], [-0.2, 0.0], [5.1, 4.9], [4.8, 5.2], [5.3, 5.0]]},
    },
    "sequences": {
        "summary": "Do & Batzoglou's five experiments",
        "value": {"sequences": ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"]},
    },
}
CSV_EXAMPLE = "x,y\n0.1,0.2\n0.3,-0.1\n5.1,4.9\n4.8,5.2\n"

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": DatasetJSON.model_json_schema(ref_template="#/components/schemas/{model}"),
                "examples": UPLOAD_EXAMPLES,
            },
            NPY: {"schema": {"type": "string", "format": "binary"}},
            ARROW: {"schema": {"type": "string", "format": "binary"}},
            CSV: {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=Dataset,
    openapi_extra=_UPLOAD_BODY,
    responses={
        413: {"description": "the upload is larger than the server's limit", "model": Message},
        422: {"description": "the upload is malformed or over a cap (msg says which)", "model": Problems},
        415: {"description": "a Content-Type other than the four accepted", "model": Message},
    },
    summary="Upload a dataset",
)
async def upload_dataset(
    request: Request, response: Response, access: Annotated[Access, Depends(get_access)]
) -> dict[str, Any]:
    """Store a point cloud (or coin experiments) once, to fit it many times by id.

    Send `application/json` (`{"points": ...}`, `{"sequences": ...}` or `{"counts": ...}`), `application/x-npy`
    (1-D or 2-D float64/float32, never unpickled), `application/vnd.apache.arrow.stream` (numeric columns,
    no nulls) or `text/csv` (numbers, an optional header line)."""
    app = services(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in CONTENT_TYPES:
        raise HTTPException(415, f"send the dataset as one of {', '.join(CONTENT_TYPES)}; got {content_type!r}")
    store: DatasetStore = app.datasets
    received, converted = store.new_upload(), store.new_upload()
    try:
        size, sha256 = await _receive(request, received)
        # JSON parsing and validation hold the GIL: a large JSON upload is read in a helper process, as large fit
        # bodies are. NPY, Arrow and CSV are read by numpy and pyarrow, which release it: a thread will do.
        offload = content_type == JSON and 0 < app.settings.body_offload_bytes <= size
        if offload:
            ingested = await anyio.to_process.run_sync(
                ingest, content_type, received, converted, app.settings, cancellable=True, limiter=parse_limiter()
            )
        else:
            ingested = await anyio.to_thread.run_sync(ingest, content_type, received, converted, app.settings)
        record = DatasetRecord(
            id=new_job_id(), owner=access.tenant, kind=ingested.kind, n=ingested.n, d=ingested.d,
            dtype=ingested.dtype, bytes=size, sha256=sha256, created_at=time.time(),
        )  # fmt: skip
        store.add(record, ingested.file)
    except MalformedData as exc:
        loc = ("body", *exc.field.split(".")) if exc.field else ("body",)
        raise RequestValidationError([{"loc": loc, "msg": exc.message, "type": "value_error.dataset"}]) from None
    except OSError as exc:  # the data directory refused a write: 507 when full, 503 otherwise (both say retry)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"storing the dataset: {exc.strerror}") from exc
        raise StorageError(f"the dataset could not be stored: {exc.strerror}") from exc
    finally:
        received.unlink(missing_ok=True)
        converted.unlink(missing_ok=True)
    response.headers["Location"] = f"/v1/datasets/{record.id}"
    return record.document()


async def _receive(request: Request, path: Path) -> tuple[int, str]:
    """The body into ``path`` as it streams in (the edge stops it at the size limit): its size and sha256."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as handle:
        try:
            async for chunk in request.stream():
                digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
        except ClientDisconnect:  # the client left mid-upload: nobody to answer, nothing to log as an error
            raise HTTPException(400, "the upload was cut off before its end") from None
    if size == 0:
        raise MalformedData("the body is empty")
    return size, digest.hexdigest()


@router.get("", response_model=DatasetPage, summary="List datasets")
async def list_datasets(
    request: Request,
    access: Annotated[Access, Depends(get_access)],
    limit: Annotated[int, Query(ge=1, le=200, description="datasets per page")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Your datasets, newest first."""
    records, next_cursor = await anyio.to_thread.run_sync(
        services(request).datasets.list, access, limit, cursor or None
    )
    return {"items": [r.document() for r in records], "next_cursor": next_cursor}


@router.get("/{dataset_id}", response_model=Dataset, responses=NOT_FOUND, summary="Read a dataset's record")
async def read_dataset(dataset_id: str, request: Request, access: Annotated[Access, Depends(get_access)]) -> Any:
    return (await _existing(services(request).datasets, dataset_id, access)).document()


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses={**NOT_FOUND, 409: {"description": "a queued or running job uses it", "model": Message}},
    summary="Delete a dataset",
)
async def delete_dataset(dataset_id: str, request: Request, access: Annotated[Access, Depends(get_access)]) -> None:
    """Remove the data (409 while a queued or running job uses it)."""
    app = services(request)
    await _existing(app.datasets, dataset_id, access)
    if app.jobs.uses_dataset(dataset_id):
        raise HTTPException(
            409, "a fit in progress (a queued or running job, or a synchronous fit) uses this dataset; "
            "wait for it to finish or cancel the job"
        )  # fmt: skip
    await anyio.to_thread.run_sync(app.datasets.delete, dataset_id)


async def attach_dataset(family: Family[Any, Any, Any], body: FitOptions, request: Request) -> None:
    """Give a fit request that names a dataset its data (memory-mapped), once the caller may see it."""
    if body.dataset is not None:
        body.attach_dataset(await anyio.to_thread.run_sync(dataset_file, family, body.dataset, request))


def dataset_file(family: Family[Any, Any, Any], dataset_id: str, request: Request) -> Path:
    """The file of the dataset named, if the caller may see it and it holds what ``family`` takes (a 422
    naming the dataset otherwise); its retention counts from now. Blocking (the metadata store may be a
    database server): call it from a thread."""
    store = services(request).datasets
    record = store.get(dataset_id, access_of(principal_of(request)))
    if record is None:
        raise EMError(f"no dataset {dataset_id!r} (upload one with POST /v1/datasets)", "dataset")
    if record.kind != family.dataset_kind:
        raise EMError(
            f"dataset {record.id!r} holds {record.kind}; a {family.kind} model needs {family.dataset_kind}", "dataset"
        )
    store.touch(record.id)
    return store.file(record.id)


async def _existing(store: DatasetStore, dataset_id: str, access: Access) -> DatasetRecord:
    record = await anyio.to_thread.run_sync(store.get, dataset_id, access)
    if record is None:
        raise HTTPException(404, f"no dataset {dataset_id!r}")
    return record
