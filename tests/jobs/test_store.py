"""The job stores against real storage (a SQLite file, a PostgreSQL server): persistence, pagination, recovery,
retention, eviction; and the SQLite store's exclusivity and old schemas.

Tests taking ``open_store`` or ``store`` run once per backend: both must behave the same.
"""

from __future__ import annotations

import base64
import os

import pytest

from service.backends.postgres import PostgresJobStore
from service.jobs.models import JobRecord, Replay
from service.jobs.store import DataDirInUse, InvalidCursor, JobFilter, SQLiteJobStore
from tests.stores import BACKENDS


@pytest.fixture(params=BACKENDS)
def open_store(request, tmp_path):
    """Opens a store on the same storage each call (a reopening sees what the previous one kept)."""
    if request.param == "sqlite":
        return lambda: SQLiteJobStore(tmp_path)
    database = request.getfixturevalue("postgres_database")
    return lambda: PostgresJobStore(database)


@pytest.fixture
def store(open_store):
    opened = open_store()
    yield opened
    opened.close()


def _record(job_id: str, created_at: float, status: str = "queued") -> JobRecord:
    return JobRecord(id=job_id, kind="coins", status=status, created_at=created_at, request={"n_coins": 2})


def test_a_finished_result_survives_reopening(open_store):
    store = open_store()
    record = _record("a", 1.0)
    store.insert(record)
    record.status, record.finished_at, record.result = "succeeded", 2.0, b'{"model":"coins"}'
    record.progress = {"start": 0, "iteration": 3, "log_likelihood": -1.5}
    store.finish(record)
    store.close()
    reopened = open_store()
    assert reopened.get("a") == record
    reopened.close()


def test_list_is_newest_first_and_pages_without_gaps(store):
    for i in range(7):
        store.insert(_record(f"job{i}", created_at=100.0 + i))
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = store.list(limit=3, cursor=cursor)
        seen += [r.id for r in page]
        pages += 1
        if cursor is None:
            break
    assert seen == [f"job{i}" for i in reversed(range(7))]
    assert pages == 3


def test_list_orders_equal_timestamps_by_id(store):
    for job_id in ("b", "a", "c"):
        store.insert(_record(job_id, created_at=5.0))
    first, cursor = store.list(limit=2)
    second, _ = store.list(limit=2, cursor=cursor)
    assert [r.id for r in first + second] == ["c", "b", "a"]


def test_a_foreign_cursor_is_rejected(store):
    with pytest.raises(InvalidCursor):
        store.list(limit=2, cursor="not-a-cursor")


@pytest.mark.parametrize(
    "decoded",
    [
        '[1%s, "x"]' % ("0" * 400),  # float() of it overflows
        '[1.5, "\\ud800"]',  # a lone surrogate: SQLite cannot bind it
        '[1e400, "x"]',
        '[NaN, "x"]',
        '[1, "x"]',  # created_at is always written as a float
        "[1.5, 7]",
        '[1.5, "x", 3]',
        '{"created_at": 1.5, "id": "x"}',
        "[" * 5000 + "]" * 5000,  # too deep for json to parse
    ],
)
def test_a_malformed_cursor_is_rejected_before_the_query(store, decoded):
    store.insert(_record("a", 1.0))
    with pytest.raises(InvalidCursor):
        store.list(limit=2, cursor=base64.urlsafe_b64encode(decoded.encode()).decode())


def test_unfinished_jobs_are_failed_at_start_up_and_finished_ones_kept(store):
    store.insert(_record("queued", 1.0))
    store.insert(_record("running", 2.0))
    store.mark_running("running", 2.5)
    done = _record("done", 3.0)
    store.insert(done)
    done.status, done.finished_at, done.result = "succeeded", 4.0, b"{}"
    store.finish(done)
    assert store.fail_unfinished("interrupted", now=10.0) == 2
    for job_id in ("queued", "running"):
        record = store.get(job_id)
        assert record.status == "failed" and record.error["type"] == "interrupted" and record.finished_at == 10.0
    assert store.get("done").status == "succeeded"


def test_purge_removes_only_finished_jobs_older_than_the_cutoff(store):
    for job_id, finished_at in (("old", 1.0), ("new", 50.0)):
        record = _record(job_id, 0.5)
        store.insert(record)
        record.status, record.finished_at = "succeeded", finished_at
        store.finish(record)
    store.insert(_record("waiting", 0.1))
    assert store.purge(finished_before=10.0) == 1
    assert store.get("old") is None and store.get("new") is not None and store.get("waiting") is not None


def test_a_second_process_on_the_same_data_dir_is_refused(tmp_path):
    store = SQLiteJobStore(tmp_path)
    with pytest.raises(DataDirInUse, match="another running service process"):
        SQLiteJobStore(tmp_path)
    store.close()


def test_listing_leaves_results_out(store):
    record = _record("a", 1.0)
    store.insert(record)
    record.status, record.finished_at, record.result = "succeeded", 2.0, b'{"big": true}'
    store.finish(record)
    page, _ = store.list(limit=5)
    assert page[0].result is None and store.get("a").result == b'{"big": true}'


def test_a_replay_survives_reopening_and_is_left_out_of_listings(open_store):
    store = open_store()
    record = _record("r", 1.0)
    store.insert(record)
    record.status, record.finished_at, record.result = "succeeded", 2.0, b"{}"
    record.replay = Replay(start=1, id_offset=12, iterations=[(1, -3.5, 0.25), (2, -3.25, 0.0625)], final_id=40)
    store.finish(record)
    store.close()
    reopened = open_store()
    assert reopened.get("r").replay == record.replay
    listed = reopened.list(10)[0][0]
    assert listed.replay is None and listed.result is None
    reopened.close()


def test_a_store_made_before_replays_existed_gains_the_column(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "jobs.sqlite3")
    old.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,"
        " started_at REAL, finished_at REAL, request TEXT NOT NULL, progress TEXT, result BLOB, error TEXT);"
        "INSERT INTO jobs VALUES ('old', 'coins', 'succeeded', 1.0, 1.0, 2.0, '{}', NULL, X'7B7D', NULL);"
    )
    old.commit()
    old.close()
    store = SQLiteJobStore(tmp_path)
    kept = store.get("old")
    assert kept is not None and kept.result == b"{}" and kept.replay is None
    store.close()


def test_list_filters_by_status_and_kind(store):
    store.insert(_record("a", 1.0, status="succeeded"))
    store.insert(JobRecord(id="b", kind="gaussian", status="succeeded", created_at=2.0))
    store.insert(_record("c", 3.0, status="failed"))
    assert [r.id for r in store.list(10, where=JobFilter(status="succeeded"))[0]] == ["b", "a"]
    assert [r.id for r in store.list(10, where=JobFilter(kind="coins"))[0]] == ["c", "a"]
    assert [r.id for r in store.list(10, where=JobFilter(status="failed", kind="gaussian"))[0]] == []


def test_a_jobs_picture_bundle_is_kept_with_its_end_and_a_store_from_before_pictures_gains_the_column(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "jobs.sqlite3")  # the table as it was before pictures (no picture column)
    old.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, "
        "started_at REAL, finished_at REAL, request TEXT NOT NULL, progress TEXT, result BLOB, error TEXT, "
        "replay TEXT, owner TEXT)"
    )
    old.close()
    store = SQLiteJobStore(tmp_path)
    record = _record("a", 1.0)
    store.insert(record)
    assert store.picture("a") is None
    record.status, record.finished_at, record.result = "succeeded", 2.0, b"{}"
    store.finish(record, picture=b"npz bytes")
    assert store.picture("a") == b"npz bytes" and store.get("a") == record
    assert store.picture("missing") is None
    store.close()


def test_results_and_pictures_are_kept_as_the_exact_bytes(store):
    record = _record("a", 1.0)
    store.insert(record)
    every_byte, large = bytes(range(256)) * 4, os.urandom(3_000_000)
    record.status, record.finished_at, record.result = "succeeded", 2.0, every_byte + large
    store.finish(record, picture=large + every_byte)
    assert store.get("a").result == every_byte + large and store.picture("a") == large + every_byte


def test_progress_and_request_round_trip_with_any_text(store):
    record = JobRecord(
        id="a", kind="coins", status="queued", created_at=1.0, request={"dataset": "nul \x00 é 😀", "b": 1, "a": 2}
    )
    store.insert(record)
    store.update_progress("a", {"iteration": 3, "note": "\x00"})
    kept = store.get("a")
    assert kept.request == record.request and list(kept.request) == ["dataset", "b", "a"]
    assert kept.progress == {"iteration": 3, "note": "\x00"}


def test_ids_no_job_can_have_find_nothing(store):
    store.insert(_record("a", 1.0))
    for job_id in ("a\x00", "missing"):
        assert store.get(job_id) is None and store.picture(job_id) is None
    assert store.list(10, where=JobFilter(kind="coins\x00"))[0] == []


def test_postgres_refuses_text_it_cannot_hold_before_it_reaches_the_server(postgres_database):
    # PostgreSQL's text holds no NUL and no lone surrogate: sent, either would fail the statement (a 500).
    store = PostgresJobStore(postgres_database)
    store.insert(_record("a", 1.0))
    assert store.get("\ud800") is None and store.picture("a\x00") is None
    with pytest.raises(InvalidCursor):
        store.list(limit=2, cursor=base64.urlsafe_b64encode(b'[1.5, "a\\u0000"]').decode())


def test_list_filters_by_owner(store):
    for job_id, owner in (("a", "alice"), ("b", "bob"), ("c", "alice"), ("d", None)):
        store.insert(JobRecord(id=job_id, kind="coins", status="queued", created_at=ord(job_id), owner=owner))
    assert [r.id for r in store.list(10, where=JobFilter(owner="alice"))[0]] == ["c", "a"]
    first, cursor = store.list(1, where=JobFilter(owner="alice"))
    assert [r.id for r in first] == ["c"]
    assert [r.id for r in store.list(1, cursor=cursor, where=JobFilter(owner="alice"))[0]] == ["a"]


def test_mark_running_moves_only_queued_jobs(store):
    store.insert(_record("a", 1.0))
    store.mark_running("a", 1.5)
    assert store.get("a").status == "running" and store.get("a").started_at == 1.5
    store.mark_running("a", 9.0)
    assert store.get("a").started_at == 1.5


def test_eviction_takes_the_oldest_finished_jobs_until_the_store_fits(store):
    store.insert(_record("waiting", 0.0))
    for i in range(40):
        record = _record(f"done{i:02}", float(i))
        store.insert(record)
        record.status, record.finished_at, record.result = "succeeded", 100.0 + i, os.urandom(20_000)
        store.finish(record)
    full = store.size_bytes()
    assert full > 40 * 20_000
    evicted = store.evict_oldest(full // 2)
    assert 0 < evicted < 40 and store.size_bytes() <= full // 2  # (SQLite evicts 16 at a time)
    kept = {r.id for r in store.list(50)[0]}
    assert kept == {"waiting", *(f"done{i:02}" for i in range(evicted, 40))}  # the oldest went, the queued stayed
    store.evict_oldest(0)
    assert [r.id for r in store.list(50)[0]] == ["waiting"]  # never a job that has not finished


def test_purge_frees_what_the_size_counts(store):
    record = _record("a", 1.0)
    store.insert(record)
    record.status, record.finished_at, record.result = "succeeded", 2.0, os.urandom(500_000)
    store.finish(record)
    before = store.size_bytes()
    assert store.purge(finished_before=3.0) == 1
    assert store.size_bytes() < before - 400_000


def test_a_probe_is_a_write_that_succeeds_on_a_healthy_store(store):
    store.probe()
    store.probe()
