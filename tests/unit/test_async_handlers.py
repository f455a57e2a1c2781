"""Async handlers without a daemon: the runner's loops, soft limits, refusal, fencing."""

import asyncio
import threading
from dataclasses import replace

import pytest
from asgiref.sync import async_to_sync

from atp import tracker
from atp.daemon.runner import execute, execute_async
from atp.exceptions import StaleAttempt
from atp.taskstatus import TaskStatus
from tests.taskapp import tasks

pytestmark = pytest.mark.django_db


def claim(handle) -> tracker.Attempt:
    (attempt,) = tracker.claim_tasks("server-1", limit=1)
    assert attempt.task_id == handle.id
    return attempt


def in_thread(function, *args):
    """Run ``function(*args)`` in a new thread (a pool thread's situation); return its value."""
    box = []
    worker = threading.Thread(target=lambda: box.append(function(*args)))
    worker.start()
    worker.join(30)
    return box[0]


def test_a_thread_keeps_one_event_loop_for_its_async_handlers():
    loops = []

    async def which_loop(task_status, input):
        loops.append(asyncio.get_running_loop())
        return input

    attempts = [claim(tasks.add.enqueue(n)) for n in range(2)]

    def run_both():
        import tests.unit.test_async_handlers as here

        here.which_loop = which_loop  # importable by the runner for this test only
        try:
            return [execute(replace(a, handler=f"{__name__}.which_loop")) for a in attempts]
        finally:
            del here.which_loop

    outcomes = in_thread(run_both)
    assert [outcome.succeeded for outcome in outcomes] == [True, True]
    assert loops[0] is loops[1] and not loops[0].is_closed()


def test_an_async_handler_in_a_thread_is_cancelled_at_its_soft_limit(tmp_path):
    marker = tmp_path / "cancelled"
    attempt = replace(claim(tasks.async_sleep.enqueue(30, marker=str(marker))), soft_time_limit=0.2)
    outcome = in_thread(execute, attempt)
    assert not outcome.succeeded
    assert outcome.exception.startswith("atp.exceptions.SoftTimeLimitExceeded")
    assert marker.read_text() == "cancelled"


def test_the_asyncio_pools_runner_refuses_a_sync_handler():
    attempt = claim(tasks.sync_sleep.enqueue(0))
    outcome = asyncio.run(execute_async(attempt))
    assert not outcome.succeeded
    assert outcome.exception.startswith("atp.exceptions.SyncHandlerRefused")
    assert "tests.taskapp.tasks.sync_sleep" in outcome.message
    assert "--pool processes" in outcome.message


def test_async_status_writes_carry_the_fencing_token():
    handle = tasks.async_progress.enqueue(2)
    attempt = claim(handle)
    status = TaskStatus(handle.id, attempt.number)
    assert async_to_sync(status.aset_progress)(1, 2, "half")["done"] == 1
    tracker.reenqueue_task(handle.id, "given up", attempt=attempt.number)  # taken away
    with pytest.raises(StaleAttempt):
        async_to_sync(status.aset_progress)(2, 2)
    with pytest.raises(StaleAttempt):
        async_to_sync(status.aheartbeat)()
    assert async_to_sync(status.ais_aborted)() is False
