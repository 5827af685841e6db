"""Small synchronous fits on the workers' idle cores: the same answer as solving them in the API process, a
worker's death answered (and the worker replaced), and back to the caller whenever no worker is free."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
import orjson
import pytest

from service.api.runs import work_item
from service.em.loop import EMOptions
from service.families import coins
from service.families.coins import CoinTask
from service.families.render import kept_model_json
from service.jobs.manager import JobLimits, LocalJobManager
from service.jobs.models import EVERYONE, ResultTooLarge, StorageError, StorageFull
from service.jobs.protocol import KeepAs, SmallFit, answers_in, batch_of
from service.jobs.store import SQLiteJobStore
from service.jobs.worker import SmallFitModels, run_small_fits
from service.models.store import SQLiteModelStore

HEADS = np.array([5.0, 9.0, 8.0, 4.0, 7.0])  # Do & Batzoglou's five experiments of ten flips
BIASES = np.array([0.6, 0.5])


def _task(max_iter: int = 100, tol: float = 1e-6, time_limit_s: float = 60.0) -> CoinTask:
    options = EMOptions(max_iter=max_iter, tol=tol, seed=7, time_limit_s=time_limit_s)
    return CoinTask(options, HEADS, 10 - HEADS, init_biases=BIASES)


def _endless() -> CoinTask:
    """A small fit that runs until its time limit (tol 0): long enough to be caught running."""
    return _task(max_iter=10**9, tol=0.0, time_limit_s=30.0)


@asynccontextmanager
async def _manager(tmp_path, workers: int) -> AsyncIterator[LocalJobManager]:
    manager = LocalJobManager(SQLiteJobStore(tmp_path), JobLimits(workers=workers, queue_size=8, retention_s=3600))
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def _until(predicate: Callable[[], object], timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_s} s")


def test_a_small_fit_on_a_free_worker_answers_as_solving_it_here(tmp_path):
    async def scenario():
        async with _manager(tmp_path, workers=2) as manager:
            return await manager.run_small_fit("fit-1", work_item(coins.FAMILY, _task()))

    finished = asyncio.run(scenario())
    assert finished is not None and finished.status == "succeeded"
    here = coins.FAMILY.solve(_task(), None)
    expected = orjson.loads(coins.FAMILY.render(here, "fit-1"))
    got = orjson.loads(finished.result)
    assert got.pop("elapsed_ms") >= 0 and expected.pop("elapsed_ms") >= 0
    assert got == expected  # the same arithmetic in another process: the same bits
    assert finished.model == kept_model_json(coins.FAMILY.keep, here)
    assert finished.iterations == here.outcome.n_iter


def test_a_worker_killed_during_a_small_fit_answers_worker_died_and_is_replaced(tmp_path):
    async def scenario():
        async with _manager(tmp_path, workers=1) as manager:
            pool = manager.pool
            endless = asyncio.ensure_future(manager.run_small_fit("fit-1", work_item(coins.FAMILY, _endless())))
            await _until(lambda: any(w.small_fits_out for w in pool._workers))
            pool._workers[0].process.kill()
            died = await endless
            await _until(lambda: pool.idle_count == 1)  # a replacement, free again
            after = await manager.run_small_fit("fit-2", work_item(coins.FAMILY, _task()))
            return died, after

    died, after = asyncio.run(scenario())
    assert died is not None and died.status == "failed" and died.error["type"] == "worker_died"
    assert "SIGKILL" in died.error["message"]
    assert after is not None and after.status == "succeeded"


def test_small_fits_go_back_to_their_callers_when_every_worker_runs_a_job(tmp_path):
    async def scenario():
        async with _manager(tmp_path, workers=1) as manager:
            # One worker: the first small fit takes it, the second waits for it.
            first = asyncio.ensure_future(manager.run_small_fit("fit-1", work_item(coins.FAMILY, _task(2000, 0.0))))
            await _until(lambda: bool(manager.pool._workers[0].small_fits_out))
            waiting = asyncio.ensure_future(manager.run_small_fit("fit-2", work_item(coins.FAMILY, _task())))
            await _until(lambda: len(manager.pool._waiting) == 1)
            # A job takes the worker next: the waiting fit is handed back (its caller solves it), not held behind it.
            job = await manager.submit("coins", work_item(coins.FAMILY, _endless()), {})
            handed_back = await waiting
            # While the job runs, a new small fit is handed back at once.
            await _until(lambda: manager.pool.busy_count == 1)
            refused = await manager.run_small_fit("fit-3", work_item(coins.FAMILY, _task()))
            await manager.cancel(job.id)
            return await first, handed_back, refused, (await manager.wait(job.id)).status

    first, handed_back, refused, job_status = asyncio.run(scenario())
    assert first is not None and first.status == "succeeded"
    assert handed_back is None and refused is None
    assert job_status == "cancelled"


def test_fits_that_waited_go_to_the_worker_together_and_die_together(tmp_path):
    # One worker, busy: the fits that wait for it are sent as one batch when it is free again (here: its
    # replacement), and a worker killed during a batch answers every fit of it worker_died.
    async def scenario():
        async with _manager(tmp_path, workers=1) as manager:
            pool = manager.pool
            first = asyncio.ensure_future(manager.run_small_fit("fit-1", work_item(coins.FAMILY, _endless())))
            await _until(lambda: bool(pool._workers[0].small_fits_out))
            batch = [
                asyncio.ensure_future(manager.run_small_fit(f"fit-{i}", work_item(coins.FAMILY, _endless())))
                for i in (2, 3)
            ]
            await _until(lambda: len(pool._waiting) == 2)
            pool._workers[0].process.kill()
            died_alone = await first
            await _until(lambda: len(pool._workers) == 1 and len(pool._workers[0].small_fits_out) == 2)
            pool._workers[0].process.kill()
            died_together = await asyncio.gather(*batch)
            await _until(lambda: pool.idle_count == 1)
            after = await asyncio.gather(
                *(manager.run_small_fit(f"fit-{i}", work_item(coins.FAMILY, _task(5 + i, 0.0))) for i in range(3))
            )
            return died_alone, died_together, after

    died_alone, died_together, after = asyncio.run(scenario())
    for died in (died_alone, *died_together):
        assert died is not None and died.status == "failed" and died.error["type"] == "worker_died"
    for i, answer in enumerate(after):
        assert answer is not None and answer.status == "succeeded"
        result = orjson.loads(answer.result)
        assert result["job_id"] == f"fit-{i}" and result["n_iter"] == 5 + i


@pytest.mark.parametrize("workers", [1, 2])
def test_many_concurrent_small_fits_each_get_their_own_answer(tmp_path, workers):
    # More callers than workers: some run on the workers (at once or after waiting), the rest are handed back.
    # Each answer is its own fit's (its id in its result), never another caller's.
    async def scenario():
        async with _manager(tmp_path, workers=workers) as manager:
            items = [work_item(coins.FAMILY, _task(max_iter=5 + i, tol=0.0)) for i in range(12)]
            return await asyncio.gather(*(manager.run_small_fit(f"fit-{i}", item) for i, item in enumerate(items)))

    answers = asyncio.run(scenario())
    solved = [(i, answer) for i, answer in enumerate(answers) if answer is not None]
    assert solved  # the workers took some
    for i, answer in solved:
        result = orjson.loads(answer.result)
        assert answer.status == "succeeded" and result["job_id"] == f"fit-{i}" and result["n_iter"] == 5 + i


def test_a_worker_with_the_model_store_keeps_the_models_of_a_batch_and_sends_none_back(tmp_path):
    models = SQLiteModelStore(tmp_path, max_per_owner=100)

    async def scenario():
        manager = LocalJobManager(
            SQLiteJobStore(tmp_path),
            JobLimits(workers=1, queue_size=8, retention_s=3600),
            small_fit_models=models.file,
        )
        await manager.start()
        try:
            # Three at once on one worker: the first alone, the two that waited for it as one batch.
            return await asyncio.gather(
                *(
                    manager.run_small_fit(f"fit-{i}", work_item(coins.FAMILY, _task()), KeepAs(f"tenant-{i}", "coins"))
                    for i in range(3)
                ),
                manager.run_small_fit("fit-unkept", work_item(coins.FAMILY, _task())),  # nobody said whose
            )
        finally:
            await manager.stop()

    try:
        *kept, unkept = asyncio.run(scenario())
        expected = kept_model_json(coins.FAMILY.keep, coins.FAMILY.solve(_task(), None))
        for i, answer in enumerate(kept):
            assert answer is not None and answer.status == "succeeded" and answer.stored and answer.model is None
            record = models.get(f"fit-{i}", EVERYONE)
            assert record is not None and (record.owner, record.kind, record.job_id) == (f"tenant-{i}", "coins", None)
            assert record.body == expected
        assert unkept is not None and not unkept.stored and unkept.model == expected
        assert models.get("fit-unkept", EVERYONE) is None
    finally:
        models.close()


class _RefusingFile:
    def __init__(self, refusal: Exception) -> None:
        self.refusal = refusal

    def open(self):
        return self

    def put_many(self, records):
        raise self.refusal


@pytest.mark.parametrize(
    ("refusal", "expected"),
    [
        (StorageFull("database or disk is full"), StorageFull),
        (ResultTooLarge("string or blob too big"), ResultTooLarge),
        (sqlite3.OperationalError("database is locked"), StorageError),  # unmapped: the store is unavailable
    ],
)
def test_a_refused_model_fails_every_fit_of_its_batch_and_crosses_the_pipe_as_the_same_error(refusal, expected):
    fits = [SmallFit(f"fit-{i}", work_item(coins.FAMILY, _task()), KeepAs("tenant", "coins")) for i in range(2)]
    parent, child = multiprocessing.Pipe()
    run_small_fits(child, batch_of([fit.to_bytes() for fit in fits]), SmallFitModels(_RefusingFile(refusal)))
    answers = answers_in(parent.recv_bytes())
    assert len(answers) == 2
    for answer in answers:
        assert answer.status == "failed" and not answer.stored and answer.result is None
        assert type(answer.refused) is expected and refusal.args[0] in str(answer.refused)
        if expected is not StorageError:  # the same message, built once: not wrapped again by the round trip
            assert str(answer.refused) == str(refusal)
