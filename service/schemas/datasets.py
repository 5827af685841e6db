"""Datasets: what an upload's record looks like, and the JSON form of an upload."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas.coins import CoinCounts
from service.schemas.common import REQUEST_CONFIG
from service.schemas.points import PointsWithMissing


class Dataset(BaseModel):
    id: str
    kind: Literal["points", "coins"] = Field(description="points (a point cloud) or coins (experiments of flips)")
    n: int = Field(description="points, or experiments")
    d: int = Field(description="dimensions of a point (coins: 2, heads and tails)")
    dtype: str = Field(description="float64 or float32, as stored")
    bytes: int = Field(description="size of the upload as sent")
    sha256: str = Field(description="of the upload as sent, hex")
    created_at: str


class DatasetPage(BaseModel):
    items: list[Dataset]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")


class DatasetJSON(BaseModel):
    """An upload as JSON: exactly one of points, sequences, counts (as in a fit request)."""

    model_config = REQUEST_CONFIG | ConfigDict(arbitrary_types_allowed=True)

    points: PointsWithMissing | None = None
    sequences: list[str] | None = Field(None, min_length=1, description='experiments as flips, e.g. "HTTH"')
    counts: list[CoinCounts] | None = Field(None, min_length=1, description="experiments as heads and tails")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in ("points", "sequences", "counts") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"send exactly one of points, sequences, counts (got {', '.join(given) or 'none'})")
        return self
