"""Decorated and async tasks under real ``atpd`` processes: every pool, limits, cancellation."""

import time

import pytest
from django.db import connection

from atp import control
from atp.models import Status, TaskInstance, TaskType
from tests.conftest import ON_POSTGRES
from tests.support.atpd_process import wait_until
from tests.taskapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

POOLS = [("processes", "2"), ("threads", "2"), ("asyncio", "10")]


def task_of(handle) -> TaskInstance:
    return TaskInstance.objects.get(pk=handle.id)


def failure(handle) -> str:
    return task_of(handle).log.get(event="task-failed").fields["exception"]


def test_a_decorated_task_runs_with_its_args_and_kwargs_and_returns_its_result(daemons):
    handle = tasks.resize.enqueue("photo.jpg", width=320)
    proc = daemons.start("--burst", "-n", "1")
    assert proc.wait(timeout=60) == 0, daemons.output(proc)
    assert handle.status == "SUCCESS"
    assert handle.result == {"path": "photo.jpg", "width": 320}
    assert task_of(handle).result == {"path": "photo.jpg", "width": 320}
    assert control.get_result(handle.id).result == {"path": "photo.jpg", "width": 320}


def test_a_starting_daemon_creates_the_types_of_discovered_tasks(daemons):
    TaskType.objects.all().delete()
    proc = daemons.start("--burst", "-n", "1")
    assert proc.wait(timeout=60) == 0, daemons.output(proc)
    created = dict(TaskType.objects.values_list("identifier", "handler"))
    assert created["taskapp.resize"] == "tests.taskapp.tasks.resize"
    assert created["tests.taskapp.tasks.async_add"] == "tests.taskapp.tasks.async_add"
    assert TaskType.objects.get(identifier="taskapp.resize").timeout == 600


@pytest.mark.parametrize(("pool", "size"), POOLS)
def test_async_tasks_run_under_every_pool(daemons, pool, size):
    added = [tasks.async_add.enqueue(n, b=100) for n in range(6)]
    progress = tasks.async_progress.enqueue(3)
    failed = tasks.async_fail.enqueue("broken on purpose")
    proc = daemons.start("--burst", "--pool", pool, "-n", size)
    assert proc.wait(timeout=90) == 0, daemons.output(proc)
    assert [handle.result for handle in added] == [100 + n for n in range(6)]
    assert progress.result["steps"] == 3
    assert task_of(progress).progress["done"] == 3
    assert failed.status == "FAILURE"
    assert "ValueError: broken on purpose" in failure(failed)


@pytest.mark.parametrize(("pool", "size"), POOLS)
def test_an_async_handler_past_its_soft_limit_is_cancelled_and_fails(daemons, pool, size, tmp_path):
    TaskType.objects.filter(identifier=tasks.async_sleep.name).delete()
    marker = tmp_path / "cancelled"
    handle = tasks.async_sleep.enqueue(30, marker=str(marker))
    TaskType.objects.filter(identifier=tasks.async_sleep.name).update(soft_time_limit=0.5)
    proc = daemons.start("--burst", "--pool", pool, "-n", size)
    assert proc.wait(timeout=60) == 0, daemons.output(proc)
    assert handle.status == "FAILURE"
    assert "SoftTimeLimitExceeded" in failure(handle)
    assert marker.read_text() == "cancelled"  # the handler saw CancelledError and cleaned up


@pytest.mark.parametrize(("pool", "size"), POOLS)
def test_revoke_with_terminate_cancels_a_sleeping_async_handler(daemons, pool, size):
    handle = tasks.async_sleep.enqueue(3600)
    daemons.start("--pool", pool, "-n", size)
    wait_until(lambda: handle.status == "STARTED", what="the handler to start")
    assert control.revoke(handle.id, terminate=True)
    wait_until(lambda: handle.status == "REVOKED", timeout=30, what="the task to be revoked")
    assert task_of(handle).log.get(event="task-revoked").fields["terminated"] is True


@pytest.mark.parametrize(("pool", "size"), POOLS)
def test_an_aborted_async_handler_sees_it_and_its_task_ends_revoked(daemons, pool, size):
    handle = tasks.async_until_aborted.enqueue()
    daemons.start("--pool", pool, "-n", size)
    wait_until(lambda: handle.status == "STARTED", what="the handler to start")
    assert control.abort(handle.id)
    wait_until(lambda: handle.ready, timeout=30, what="the task to end")
    assert handle.status == "REVOKED"


def test_the_asyncio_pool_hard_limit_cancels_and_restarts(daemons):
    handle = tasks.async_sleep.enqueue(3600)
    TaskType.objects.filter(identifier=tasks.async_sleep.name).update(
        hard_time_limit=0.5, maxrestart=0
    )
    proc = daemons.start("--burst", "--pool", "asyncio", "-n", "4")
    assert proc.wait(timeout=60) == 0, daemons.output(proc)
    assert handle.status == "FAILURE"
    assert "time limit" in daemons.output(proc)


def test_the_asyncio_pool_refuses_sync_handlers_with_a_clear_message(daemons):
    handle = tasks.sync_sleep.enqueue(0.01)
    proc = daemons.start("--burst", "--pool", "asyncio", "-n", "4")
    assert proc.wait(timeout=60) == 0, daemons.output(proc)
    assert handle.status == "FAILURE"
    assert "SyncHandlerRefused" in failure(handle)
    assert "--pool processes" in failure(handle)


@pytest.mark.skipif(not ON_POSTGRES, reason="counts connections in pg_stat_activity")
def test_a_hundred_async_handlers_share_a_few_connections(daemons, settings):
    settings.ATP = {"MAX_QUEUE_SIZE": None}
    handles = [tasks.async_progress.enqueue(5) for _ in range(100)]
    slow = [tasks.async_sleep.enqueue(3) for _ in range(100)]

    def others() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [connection.settings_dict["NAME"]],
            )
            return cursor.fetchone()[0]

    # Connections earlier tests of the session left open to this database (a pooler's idle
    # server sessions, another alias's connection) are not the daemon's.
    before = others()
    proc = daemons.start(
        "--burst", "--pool", "asyncio", "-n", "100", settings={"ASYNC_DB_THREADS": 3}
    )
    peak_connections = peak_running = 0
    while proc.poll() is None:
        peak_connections = max(peak_connections, others() - before)
        running = TaskInstance.objects.filter(status=Status.RUNNING).count()
        peak_running = max(peak_running, running)
        time.sleep(0.05)
    assert proc.returncode == 0, daemons.output(proc)
    assert all(handle.status == "SUCCESS" for handle in handles + slow)
    assert peak_running >= 50  # the sleepers overlapped: many handlers ran at once
    # The daemon's connection, its LISTEN connection and 3 database threads: far fewer
    # than one per running handler.
    assert 0 < peak_connections <= 6, (peak_connections, before)


def test_the_async_benchmark_section_runs_its_tasks_on_the_asyncio_pool():
    from atp import tracker
    from atp.bench import throughput as bench

    tracker.register_task_type(
        bench.ASYNC_SLEEP, bench.BENCH_TYPES[bench.ASYNC_SLEEP], max_queue_size=None
    )
    figures = bench.measure_async(count=30, seconds=0.05, concurrency=10)
    assert (figures["tasks"], figures["concurrency"]) == (30, 10)
    assert 0 < figures["startup_s"] < figures["wall_s"]
    assert not TaskInstance.objects.exists()  # the section removes its tasks
    rows = bench.table({"async": figures})
    assert [row[2] for row in rows] == ["wall time", "start-up", "first start->last end"]
