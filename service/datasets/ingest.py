"""An upload received on disk, made into a stored dataset: read by its format, checked against the caps, and
written as the ``.npy`` file fits read (an NPY upload already is one).

Runs off the event loop: in a thread for small uploads, in a helper process for large ones (parsing holds the
GIL), where only the paths go in and a few numbers come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import ValidationError

from service.datasets.parse import MalformedData, check_points, read_arrow, read_csv, read_npy
from service.datasets.store import DatasetKind
from service.em.coins import parse_sequences
from service.em.errors import EMError
from service.families.limits import check_size
from service.schemas.datasets import DatasetJSON
from service.settings import Settings

NPY, ARROW, CSV, JSON = "application/x-npy", "application/vnd.apache.arrow.stream", "text/csv", "application/json"
CONTENT_TYPES = (JSON, NPY, ARROW, CSV)


@dataclass(frozen=True)
class Ingested:
    kind: DatasetKind
    n: int
    d: int
    dtype: str
    file: Path  # the .npy file to keep


def ingest(content_type: str, received: Path, converted: Path, settings: Settings) -> Ingested:
    """Read ``received`` as ``content_type``; unless it is NPY already, write the points to ``converted``."""
    if content_type == JSON:
        kind, points = read_json(received)
    elif content_type == NPY:
        kind, points = "points", read_npy(received)
    elif content_type == ARROW:
        kind, points = "points", read_arrow(received)
    else:
        kind, points = "points", read_csv(received, settings.max_features, settings.max_points)
    n, d = int(points.shape[0]), int(points.shape[1]) if points.ndim == 2 else 1
    try:
        check_size(settings, field="body", n_observations=n, n_features=1 if kind == "coins" else d, n_components=1)
    except EMError as exc:
        raise MalformedData(exc.message) from None
    if content_type == NPY:
        return Ingested(kind, n, d, str(points.dtype), received)
    with open(converted, "wb") as handle:
        np.save(handle, np.ascontiguousarray(points), allow_pickle=False)
    return Ingested(kind, n, d, str(points.dtype), converted)


def read_json(path: Path) -> tuple[DatasetKind, NDArray[Any]]:
    """``{"points": ...}``, ``{"sequences": ...}`` or ``{"counts": ...}``: points, or heads and tails columns."""
    try:
        upload = DatasetJSON.model_validate(orjson.loads(path.read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise MalformedData(f"the body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        raise MalformedData(error["msg"], ".".join(str(part) for part in error["loc"]) or None) from None
    if upload.points is not None:
        return "points", check_points(upload.points)
    if upload.sequences is not None:
        try:
            heads, tails = parse_sequences(upload.sequences)
        except EMError as exc:
            raise MalformedData(exc.message, exc.field) from None
    else:
        assert upload.counts is not None
        heads = np.array([c.heads for c in upload.counts], dtype=np.float64)
        tails = np.array([c.tails for c in upload.counts], dtype=np.float64)
    return "coins", np.column_stack([heads, tails])
