"""The model stores (SQLite, PostgreSQL): puts made in one turn of the event loop are committed together, and
all or none; listing, access, retention and the per-owner cap behave the same on both backends."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.backends.postgres import PostgresModelStore
from service.jobs.models import EVERYONE, Access, StorageFull
from service.jobs.store import InvalidCursor
from service.models.store import GroupCommit, ModelRecord, SQLiteModelStore
from tests.stores import BACKENDS


@pytest.fixture(params=BACKENDS)
def open_store(request, tmp_path):
    """``open_store(max_per_owner)``: a model store on this test's storage."""
    if request.param == "sqlite":
        return lambda max_per_owner=100: SQLiteModelStore(tmp_path, max_per_owner=max_per_owner)
    database = request.getfixturevalue("postgres_database")
    return lambda max_per_owner=100: PostgresModelStore(database, max_per_owner=max_per_owner)


def _record(i: int) -> ModelRecord:
    return ModelRecord(f"m{i}", None, "coins", float(i), None, b'{"params": {}}')


def test_puts_of_one_turn_are_one_commit_and_each_waits_for_it(open_store):
    store = open_store()
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


def test_a_refused_batch_fails_every_put_in_it_and_stores_none(open_store):
    store = open_store()
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


def _owned(model_id: str, owner: str | None, created_at: float, body: bytes = b'{"params": {}}') -> ModelRecord:
    return ModelRecord(model_id, owner, "gaussian", created_at, "job-1", body)


def test_a_model_reads_back_as_stored_and_only_for_its_owner(open_store):
    store = open_store()
    body = b'{"params": {"w": [0.5, 0.5]}, "n_features": 2, "\xc3\xa9": "\\u0000"}'
    store.put(_owned("m", "alice", 7.5, body))
    assert store.get("m", Access(tenant="alice")) == _owned("m", "alice", 7.5, body)
    assert store.get("m", Access(tenant="bob")) is None and store.get("m", Access(tenant="bob", admin=True))
    assert store.get("m\x00", EVERYONE) is None and store.get("nothing", EVERYONE) is None


def test_models_list_newest_first_per_owner_and_page_by_id(open_store):
    store = open_store()
    store.put_many([_owned(f"m{i}", "alice" if i % 2 else "bob", float(i)) for i in range(7)])
    store.put(_owned("same-time-b", "alice", 100.0))
    store.put(_owned("same-time-a", "alice", 100.0))
    alice = Access(tenant="alice")
    first, cursor = store.list(alice, 3, None)
    second, last = store.list(alice, 3, cursor)
    assert [m.id for m in first + second] == ["same-time-b", "same-time-a", "m5", "m3", "m1"] and last is None
    assert len(store.list(EVERYONE, 20, None)[0]) == 9
    with pytest.raises(InvalidCursor):
        store.list(alice, 3, "not-an-id")


def test_delete_touch_and_count(open_store):
    store = open_store()
    store.put_many([_owned("a", None, 1.0), _owned("b", None, 2.0)])
    assert store.delete("a") and not store.delete("a") and not store.delete("a\x00")
    store.touch("b")
    store.touch("missing")
    assert store.count() == 1


def test_expiry_forgets_unused_models_and_trims_each_owner_to_the_cap(open_store):
    store = open_store(max_per_owner=2)
    now = time.time()
    store.put_many([_owned("old0", "alice", now - 100), _owned("old1", "alice", now - 101)])
    store.put_many([_owned(f"b{i}", "bob", now - 10 + i) for i in range(3)])
    store.put_many([_owned(f"n{i}", None, now - 5 + i) for i in range(3)])
    store.touch("old0")  # used just now: retention counts from its last use
    assert store.expire(now - 50) == 3  # old1 by retention; b0 and n0 past their owner's cap
    assert {m.id for m in store.list(EVERYONE, 50, None)[0]} == {"old0", "b1", "b2", "n1", "n2"}


def test_trim_keeps_the_most_recently_used(open_store):
    store = open_store(max_per_owner=2)
    store.put_many([_owned(f"m{i}", "alice", float(i)) for i in range(4)])
    store.touch("m0")
    assert store.trim("alice") == 2
    assert {m.id for m in store.list(EVERYONE, 10, None)[0]} == {"m0", "m3"}
    store.put_many([_owned(f"n{i}", None, float(i)) for i in range(3)])
    assert store.trim(None) == 1 and store.count() == 4
