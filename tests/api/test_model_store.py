"""The model store: puts made in one turn of the event loop are committed together, and all or none."""

from __future__ import annotations

import asyncio

import pytest

from service.jobs.models import EVERYONE, StorageFull
from service.models.store import GroupCommit, ModelRecord, SQLiteModelStore


def _record(i: int) -> ModelRecord:
    return ModelRecord(f"m{i}", None, "coins", float(i), None, b'{"params": {}}')


def test_puts_of_one_turn_are_one_commit_and_each_waits_for_it(tmp_path):
    store = SQLiteModelStore(tmp_path, max_per_owner=100)
    batches = []
    original = store.put_many

    def counting(records):
        batches.append(len(records))
        original(records)

    store.put_many = counting  # type: ignore[method-assign]

    async def main():
        writes = GroupCommit(store)
        await asyncio.gather(*(writes.put(_record(i)) for i in range(10)))
        assert all(store.get(f"m{i}", EVERYONE) is not None for i in range(10))  # stored before put returned
        await writes.put(_record(10))

    asyncio.run(main())
    assert batches == [10, 1]


def test_a_refused_batch_fails_every_put_in_it_and_stores_none(tmp_path):
    store = SQLiteModelStore(tmp_path, max_per_owner=100)
    store.put(_record(0))

    async def main():
        writes = GroupCommit(store)
        # m0 exists: the batch's insert fails on it, so the whole transaction is rolled back.
        results = await asyncio.gather(*(writes.put(_record(i)) for i in (1, 2, 0)), return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results)

    asyncio.run(main())
    assert store.get("m1", EVERYONE) is None and store.count() == 1

    def full(records):
        raise StorageFull("database or disk is full")

    store.put_many = full  # type: ignore[method-assign]
    with pytest.raises(StorageFull):
        asyncio.run(GroupCommit(store).put(_record(5)))
