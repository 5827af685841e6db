"""The small-fit pipe's packing of a task: every family's example tasks come back equal, arrays and all."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import numpy as np
import pytest

from service.families.registry import FAMILIES
from service.jobs import wire
from service.jobs.models import WorkItem
from service.jobs.protocol import SmallFit
from service.settings import Settings

EXAMPLES = [
    pytest.param(family, body, id=f"{family.kind}-{name}")
    for family in FAMILIES
    for name, example in family.examples.items()
    if "dataset" not in (body := example["value"])
]


def _assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        assert b.flags.writeable and b.flags.c_contiguous
    elif dataclasses.is_dataclass(a):
        for field in dataclasses.fields(a):
            _assert_same(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize(("family", "body"), EXAMPLES)
def test_every_example_task_crosses_the_small_fit_pipe_unchanged(family, body):
    task = family.make_task(family.request.model_validate(body), Settings(), 10.0)
    assert wire.packable(task)
    _assert_same(task, wire.unpack(pickle.loads(pickle.dumps(wire.pack(task)))))
    item = WorkItem(family.solve, task, family.render, 10.0)
    crossed = SmallFit.from_bytes(SmallFit("fit-1", item).to_bytes())
    assert crossed.fit_id == "fit-1" and crossed.item.solve is family.solve and crossed.item.render is family.render
    _assert_same(task, crossed.item.task)


def test_arrays_keep_their_dtype_shape_and_byte_order_and_anything_else_pickles_as_it_is():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        counts: np.ndarray

    @dataclasses.dataclass(frozen=True)
    class Task:
        matrix: np.ndarray
        big_endian: np.ndarray
        strided: np.ndarray
        objects: np.ndarray
        inner: Inner
        nested: list[np.ndarray]
        nothing: None = None

    task = Task(
        matrix=np.arange(6, dtype=np.int32).reshape(2, 3),
        big_endian=np.array([1.5, -2.0], dtype=">f8"),
        strided=np.arange(10.0)[::3],  # not contiguous: packed as its values
        objects=np.array(["a", None], dtype=object),  # not raw numbers: left to pickle
        inner=Inner(np.array([[True, False]])),
        nested=[np.array([1.0, np.nan])],
    )
    _assert_same(task, wire.unpack(wire.pack(task)))


def test_a_dataclass_its_fields_cannot_rebuild_is_not_packed():
    @dataclasses.dataclass
    class Derived:
        value: int
        twice: int = dataclasses.field(init=False)

    assert not wire.packable(Derived(1)) and not wire.packable(Derived) and not wire.packable((1, 2))


def test_a_task_that_is_not_packable_crosses_the_small_fit_pipe_as_pickle_has_it():
    task = {"heads": np.array([5.0, 9.0]), "note": "a task that is no dataclass"}
    crossed = SmallFit.from_bytes(SmallFit("fit-2", WorkItem(len, task, repr, 1.0)).to_bytes()).item.task
    _assert_same(task["heads"], crossed["heads"])
    assert crossed["note"] == task["note"]
