"""Datasets: uploaded once (JSON, NPY, Arrow, CSV), read, listed and deleted by id.

An upload is streamed to a file as it arrives (never held whole in memory), hashed on the way, then read and
checked off the event loop; a malformed file is a 422 naming what is wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
import numpy as np
import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from numpy.typing import NDArray
from pydantic import ValidationError

from service.api.deps import get_access, services
from service.api.security import principal_of
from service.datasets.parse import MalformedData, check_points, read_arrow, read_csv, read_npy
from service.datasets.store import DatasetKind, DatasetRecord, DatasetStore, now
from service.em.coins import parse_sequences
from service.em.errors import EMError
from service.families.base import Family
from service.families.limits import check_size
from service.jobs.models import Access, new_job_id
from service.schemas.common import FitOptions, Message, Problems
from service.schemas.datasets import Dataset, DatasetJSON, DatasetPage
from service.settings import Settings

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

NPY, ARROW, CSV, JSON = "application/x-npy", "application/vnd.apache.arrow.stream", "text/csv", "application/json"
_READERS: dict[str, Callable[[Path], NDArray[Any]]] = {NPY: read_npy, ARROW: read_arrow, CSV: read_csv}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such dataset", "model": Message}}

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"schema": DatasetJSON.model_json_schema(ref_template="#/components/schemas/{model}")},
            NPY: {"schema": {"type": "string", "format": "binary"}},
            ARROW: {"schema": {"type": "string", "format": "binary"}},
            CSV: {"schema": {"type": "string"}},
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
    if content_type not in (JSON, NPY, ARROW, CSV):
        raise HTTPException(415, f"send the dataset as one of {JSON}, {NPY}, {ARROW}, {CSV}; got {content_type!r}")
    store: DatasetStore = app.datasets
    received = store.new_upload()
    try:
        size, sha256 = await _receive(request, received)
        if content_type == JSON:
            kind, points = await anyio.to_thread.run_sync(_from_json, received)
        else:
            kind, points = "points", await anyio.to_thread.run_sync(_READERS[content_type], received)
        _check_size(kind, points, app.settings)
        record = DatasetRecord(
            id=new_job_id(), owner=access.tenant, kind=kind, n=int(points.shape[0]),
            d=int(points.shape[1]) if points.ndim == 2 else 1, dtype=str(points.dtype), bytes=size,
            sha256=sha256, created_at=now(),
        )  # fmt: skip
        if content_type == NPY:
            stored = received  # already the file fits will read
        else:
            stored = store.new_upload()
            await anyio.to_thread.run_sync(_save, stored, points)
        del points  # a memory map of the received file: closed before the file moves
        store.add(record, stored)
    except MalformedData as exc:
        raise _invalid(exc.message) from None
    finally:
        received.unlink(missing_ok=True)
    response.headers["Location"] = f"/v1/datasets/{record.id}"
    return record.document()


async def _receive(request: Request, path: Path) -> tuple[int, str]:
    """The body into ``path`` as it streams in (the edge stops it at the size limit): its size and sha256."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as handle:
        async for chunk in request.stream():
            digest.update(chunk)
            handle.write(chunk)
            size += len(chunk)
    if size == 0:
        raise MalformedData("the body is empty")
    return size, digest.hexdigest()


def _from_json(path: Path) -> tuple[DatasetKind, NDArray[Any]]:
    try:
        upload = DatasetJSON.model_validate(orjson.loads(path.read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise MalformedData(f"the body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        errors = [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise RequestValidationError(errors) from None
    if upload.points is not None:
        return "points", check_points(upload.points)
    if upload.sequences is not None:
        try:
            heads, tails = parse_sequences(upload.sequences)
        except EMError as exc:
            raise MalformedData(exc.message) from None
    else:
        assert upload.counts is not None
        heads = np.array([c.heads for c in upload.counts], dtype=np.float64)
        tails = np.array([c.tails for c in upload.counts], dtype=np.float64)
    return "coins", np.column_stack([heads, tails])


def _check_size(kind: DatasetKind, points: NDArray[Any], settings: Settings) -> None:
    try:
        check_size(
            settings, field="body", n_observations=int(points.shape[0]),
            n_features=1 if kind == "coins" or points.ndim == 1 else int(points.shape[1]), n_components=1,
        )  # fmt: skip
    except EMError as exc:
        raise MalformedData(exc.message) from None


def _save(path: Path, points: NDArray[Any]) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(points), allow_pickle=False)


def _invalid(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": message, "type": "value_error.dataset"}])


@router.get("", response_model=DatasetPage, summary="List datasets")
async def list_datasets(
    request: Request,
    access: Annotated[Access, Depends(get_access)],
    limit: Annotated[int, Query(ge=1, le=200, description="datasets per page")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Your datasets, newest first."""
    records, next_cursor = services(request).datasets.list(access, limit, cursor or None)
    return {"items": [r.document() for r in records], "next_cursor": next_cursor}


@router.get("/{dataset_id}", response_model=Dataset, responses=NOT_FOUND, summary="Read a dataset's record")
async def read_dataset(dataset_id: str, request: Request, access: Annotated[Access, Depends(get_access)]) -> Any:
    return _existing(services(request).datasets, dataset_id, access).document()


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses={**NOT_FOUND, 409: {"description": "a queued or running job uses it", "model": Message}},
    summary="Delete a dataset",
)
async def delete_dataset(dataset_id: str, request: Request, access: Annotated[Access, Depends(get_access)]) -> None:
    """Remove the data (409 while a queued or running job uses it)."""
    app = services(request)
    _existing(app.datasets, dataset_id, access)
    if app.jobs.uses_dataset(dataset_id):
        raise HTTPException(409, "a queued or running job uses this dataset; cancel it or wait for it to finish")
    app.datasets.delete(dataset_id)


def attach_dataset(family: Family[Any, Any, Any], body: FitOptions, request: Request) -> None:
    """Give a fit request that names a dataset its data (memory-mapped), once the caller may see it."""
    if body.dataset is None:
        return
    store = services(request).datasets
    principal = principal_of(request)
    record = store.get(body.dataset, Access(tenant=principal.tenant, admin=principal.admin))
    if record is None:
        raise EMError(f"no dataset {body.dataset!r} (upload one with POST /v1/datasets)", "dataset")
    if record.kind != family.dataset_kind:
        raise EMError(
            f"dataset {record.id!r} holds {record.kind}; a {family.kind} fit needs {family.dataset_kind}", "dataset"
        )
    store.touch(record.id)
    file = store.file(record.id)
    body.attach_dataset(np.load(file, mmap_mode="r", allow_pickle=False), file)


def _existing(store: DatasetStore, dataset_id: str, access: Access) -> DatasetRecord:
    record = store.get(dataset_id, access)
    if record is None:
        raise HTTPException(404, f"no dataset {dataset_id!r}")
    return record
