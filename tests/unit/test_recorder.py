"""The outcome recorder (atp.daemon.recorder): a daemon's outcomes recorded on a second
connection, and what the loop does with what comes back (atp.daemon.engine).

The recorder's thread opens its own connection, so these tests commit (``transaction=True``)
and hold real row locks from the test's connection to prove the two are apart.
"""

import threading

import pytest
from django.db import connection, transaction

from atp import tracker
from atp.daemon.engine import Daemon, WorkerOptions
from atp.daemon.pool import Crashed, Finished
from atp.daemon.recorder import OutcomeRecorder
from atp.daemon.runner import Outcome
from atp.daemon.thread_pool import ThreadPool
from atp.models import Status, TaskInstance
from tests.support.atpd_process import wait_until
from tests.support.factories import TaskTypeFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def claimed():
    """Three claimed attempts of a fresh type, as a daemon holds them."""
    TaskTypeFactory(identifier="rec.echo", handler="tests.support.handlers.echo")
    for n in range(3):
        tracker.enqueue_task("rec.echo", f"r{n}")
    return tracker.claim_tasks("rec-daemon", limit=3)


@pytest.fixture
def recorder():
    woken = threading.Event()
    recorder = OutcomeRecorder(woken.set, idle_in_transaction=10.0)
    recorder.woken = woken  # type: ignore[attr-defined]
    yield recorder
    recorder.stop()


def succeeded(attempt) -> Finished:
    return Finished(attempt, Outcome(attempt.task_id, attempt.number, succeeded=True))


def lock_waiters() -> list[int]:
    """Backends of this database waiting for a lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else a transaction sees its first
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        return [pid for (pid,) in cursor.fetchall()]


def own_backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def statuses(attempts) -> list:
    ids = [attempt.task_id for attempt in attempts]
    return list(
        TaskInstance.objects.filter(pk__in=ids).order_by("pk").values_list("status", flat=True)
    )


def test_a_batch_is_recorded_in_the_background_and_wakes_the_loop(claimed, recorder):
    recorder.submit([succeeded(attempt) for attempt in claimed])
    assert recorder.in_flight == 3
    with pytest.raises(RuntimeError, match="holds a batch already"):
        recorder.submit([])  # one batch at a time: never the same report twice at once
    done = recorder.result(wait=True)
    assert recorder.woken.is_set()
    assert (done.size, done.error, recorder.in_flight) == (3, None, 0)
    assert [line[2][1] for line in done.lines] == ["Finished"] * 3
    assert statuses(claimed) == [Status.FINISHED] * 3
    assert recorder.result() is None  # taken back once


def test_the_recorder_has_a_connection_of_its_own_with_the_daemons_lock_timeout(claimed, recorder):
    """While this connection holds a task's row lock, the recorder waits on it from another
    backend, and gives up after the daemon's lock timeout: a busy database, not a hang."""
    first = claimed[0]
    with transaction.atomic():
        TaskInstance.objects.select_for_update().get(pk=first.task_id)
        recorder.submit([succeeded(first)])
        wait_until(lambda: lock_waiters() != [], what="the recorder to wait for the row lock")
        (waiter,) = lock_waiters()
        done = recorder.result(wait=True)
    assert waiter != own_backend()
    assert done.kind == "busy", done.error
    assert "lock timeout" in str(done.error)
    assert statuses([first]) == [Status.RUNNING]  # rolled back: nothing half-written
    recorder.submit([succeeded(first)])  # the loop submits it again: now it goes through
    assert recorder.result(wait=True).error is None
    assert statuses([first]) == [Status.FINISHED]


def test_an_error_comes_back_as_an_error_and_the_batch_is_rolled_back(claimed, recorder):
    good, bad = claimed[0], claimed[1]
    broken = Finished(bad, Outcome(bad.task_id, bad.number, succeeded=True, result_json="{"))
    recorder.submit([succeeded(good), broken])
    done = recorder.result(wait=True)
    assert done.kind == "error" and done.lines == []
    assert statuses([good, bad]) == [Status.RUNNING, Status.RUNNING]


@pytest.fixture
def daemon_holding(claimed, recorder):
    """A daemon (not running its loop) that holds the claimed attempts, with the recorder."""
    daemon = Daemon(WorkerOptions(concurrency=3, server_id="rec-daemon"))
    daemon.pool = ThreadPool(3)  # idle: nothing is submitted to it
    daemon.recorder = recorder
    daemon.holding = {attempt.task_id: attempt.number for attempt in claimed}
    daemon.queue_empty = True  # nothing to claim: the steps only record
    yield daemon
    daemon.pool.stop()


def test_the_loop_forgets_a_report_only_once_its_batch_committed(claimed, recorder, daemon_holding):
    daemon = daemon_holding
    first, second, third = claimed
    daemon.pending = [succeeded(first), succeeded(second)]
    daemon._record_and_claim()  # the batch goes to the thread
    assert recorder.in_flight == 2
    daemon.pending.append(Crashed(third, "killed", "", 9))  # arrives while it records
    assert daemon._recordable() == []  # nothing more is recorded until the batch is back
    assert not daemon._db_step_due()  # so the loop sleeps instead of spinning
    daemon._take_recorded(wait=True)
    assert [report.attempt.task_id for report in daemon.pending] == [third.task_id]
    assert daemon.holding == {third.task_id: third.number}
    assert daemon.processed == 2
    assert daemon.queue_empty is False  # what the batch re-enqueued or released is looked for


def test_a_failed_batch_stays_pending_and_is_then_recorded_one_by_one(
    claimed, recorder, daemon_holding
):
    daemon = daemon_holding
    good, bad, _ = claimed
    broken = Finished(bad, Outcome(bad.task_id, bad.number, succeeded=True, result_json="{"))
    daemon.pending = [succeeded(good), broken]
    recorder.submit(daemon.pending)
    daemon._take_recorded(wait=True)
    assert len(daemon.pending) == 2 and daemon.record_singly
    daemon._record_and_claim()  # one by one, in this thread: the culprit fails alone
    assert daemon.pending == [] and not daemon.record_singly
    assert statuses([good, bad]) == [Status.FINISHED, Status.FAILED]
