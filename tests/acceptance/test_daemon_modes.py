"""atpd's other modes and tools: thread pool, soft limits, NOTIFY wake-up, atp_cleanup, outages."""

import io
import json
import re
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from atp import tracker
from atp.daemon.db import database_url
from atp.models import LogRecord, Status, TaskInstance, Worker
from tests.support.atpd_process import REPO, wait_until
from tests.support.factories import TaskInstanceFactory, TaskTypeFactory, WorkerFactory

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(ids) -> set:
    return set(TaskInstance.objects.filter(pk__in=ids).values_list("status", flat=True))


def test_thread_pool_runs_handlers_and_records_failures(daemons):
    tracker.register_task_type("acc.echo", "tests.support.handlers.echo")
    tracker.register_task_type("acc.raise", "tests.support.handlers.fail")
    ok = [tracker.enqueue_task("acc.echo", f"e{n}", {"n": n}) for n in range(10)]
    bad = tracker.enqueue_task("acc.raise", "bad")
    proc = daemons.start("--burst", "--pool", "threads", "-n", "4")
    assert proc.wait(timeout=60) == 0, daemons.output(proc)
    assert statuses(ok) == {Status.FINISHED}
    assert tracker.get_task_response("acc.echo", "e3") == (b"{'n': 3}", "text/plain")
    assert TaskInstance.objects.get(pk=bad).status == Status.FAILED


def test_soft_time_limit_raises_inside_the_handler(daemons):
    tracker.register_task_type(
        "acc.soft", "tests.support.handlers.soft_limited", soft_time_limit=0.5, timeout=60
    )
    task_id = tracker.enqueue_task("acc.soft", "soft")
    proc = daemons.start("--burst", "-n", "1")
    assert proc.wait(timeout=60) == 0, daemons.output(proc)
    task = TaskInstance.objects.get(pk=task_id)
    assert task.status == Status.FAILED
    assert "SoftTimeLimitExceeded" in task.log.get(event="task-failed").fields["exception"]
    assert tracker.get_task_response("acc.soft", "soft") == (b"soft limit 0.5", "text/plain")


@pytest.mark.postgres
def test_an_idle_daemon_is_woken_by_notify_not_by_polling(daemons):
    """With a 60 s poll interval, only LISTEN/NOTIFY can start the task within the wait."""
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop")
    proc = daemons.start("-n", "1", "--poll-interval", "60")
    wait_until(lambda: "atpd started" in daemons.output(proc), what="the daemon to start")
    time.sleep(1)  # let it reach its idle wait (it polled once at start)
    assert "LISTEN unavailable" not in daemons.output(proc)
    task_id = tracker.enqueue_task("acc.noop", "wake-up")
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == Status.FINISHED,
        timeout=20,
        what="the idle daemon to run the task",
    )


def test_atp_cleanup_reports_and_dry_run_changes_nothing(db, capsys):
    kind = TaskTypeFactory(identifier="cron", timeout=60, timeret=10)
    zombie = TaskInstanceFactory(type=kind, status=Status.RUNNING, server_id="gone", attempts=1)
    retired = TaskInstanceFactory(type=kind, status=Status.FINISHED)
    long_ago = timezone.now() - timedelta(hours=1)
    TaskInstance.objects.filter(pk=zombie.pk).update(updated_at=long_ago)
    TaskInstance.objects.filter(pk=retired.pk).update(finished_at=long_ago)
    lost = WorkerFactory(server_id="lost-daemon", heartbeat_at=long_ago)
    owned = TaskInstanceFactory(type=kind, status=Status.RUNNING, server_id=lost.server_id)

    call_command("atp_cleanup", "--dry-run", verbosity=2)  # -v 2 lists every task (14.16)
    preview = capsys.readouterr().out
    assert f"would handle lost      cron::{owned.identifier}" in preview
    assert f"zombie    cron::{zombie.identifier}" in preview
    assert f"retired   cron::{retired.identifier}" in preview
    assert TaskInstance.objects.filter(status=Status.RUNNING).count() == 2
    assert TaskInstance.objects.filter(pk=retired.pk).exists()

    call_command("atp_cleanup", verbosity=2)
    report = capsys.readouterr().out
    assert f"reenqueued cron::{owned.identifier}" in report
    assert f"reenqueued cron::{zombie.identifier}" in report
    assert f"deleted    cron::{retired.identifier}" in report
    assert "3 task(s) handled." in report
    assert not TaskInstance.objects.filter(pk=retired.pk).exists()
    assert statuses([owned.pk, zombie.pk]) == {Status.ACCEPTED}
    assert Worker.objects.get(pk=lost.pk).stopped_at is not None


@override_settings(ATP={"CLEANUP_BATCH_SIZE": 10})
def test_atp_cleanup_shows_progress_and_a_summary_not_every_task(db, capsys, monkeypatch):
    """Issue 14.16: long runs report progress; each task is listed only with -v 2."""
    from atp.management.commands import atp_cleanup

    monkeypatch.setattr(atp_cleanup, "PROGRESS_EVERY", 0.0)  # a line after every batch
    kind = TaskTypeFactory(identifier="cron", timeout=60, timeret=10)
    retired = TaskInstanceFactory.create_batch(35, type=kind, status=Status.FINISHED)
    TaskInstance.objects.filter(pk__in=[task.pk for task in retired]).update(
        finished_at=timezone.now() - timedelta(hours=1)
    )
    call_command("atp_cleanup")
    lines = capsys.readouterr().out.splitlines()
    progress = [re.match(r"retired: (\d+) task\(s\) so far \(", line) for line in lines]
    assert [int(match[1]) for match in progress if match] == [10, 20, 30, 35]
    assert any(line.startswith("retired ") and "35 deleted" in line for line in lines)
    assert any(line.startswith("zombies ") and "nothing to do" in line for line in lines)
    assert lines[-1] == "35 task(s) handled."
    assert not any(line.startswith("deleted ") for line in lines)  # no per-task lines


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
@pytest.mark.postgres
def test_the_daemon_survives_a_postgresql_restart(private_postgres, daemons):
    """A restart of the database server, on a private cluster (never the shared one)."""
    tracker.register_task_type("acc.sleep", "tests.support.handlers.sleep", max_queue_size=1000)
    ids = [tracker.enqueue_task("acc.sleep", f"s{n}", {"seconds": 0.02}) for n in range(300)]
    proc = daemons.start("-n", "2")
    wait_until(
        lambda: TaskInstance.objects.filter(status=Status.FINISHED).count() >= 40,
        what="the daemon to be under way",
    )
    private_postgres.restart()
    wait_until(
        lambda: TaskInstance.objects.filter(status=Status.FINISHED).count() == 300,
        timeout=120,
        what="the queue to be finished after the restart",
    )
    assert statuses(ids) == {Status.FINISHED}
    assert LogRecord.objects.filter(event="task-succeeded").count() == 300
    assert "Database unavailable" in daemons.output(proc)
    assert "Database back after" in daemons.output(proc)
    assert proc.poll() is None  # still serving


def test_atpd_rejects_bad_options():
    result = subprocess.run(
        [sys.executable, "manage.py", "atpd", "--concurrency", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"DATABASE_URL": database_url(), "PATH": ""},
    )
    assert result.returncode != 0
    assert "concurrency" in result.stderr


def test_the_benchmark_drains_and_counts_real_tasks():
    from atp.bench import throughput as bench

    bench.setup()
    figures = bench.measure_drain(20, 1, "processes")
    assert figures["tasks"] == 20
    assert 0 < figures["startup_s"] < figures["wall_s"] <= figures["exit_s"]
    assert figures["wall_per_s"] > 0 and figures["steady_per_s"] > 0
    # Only the ended tasks setup() keeps as history (bench.fill_history) remain.
    left = TaskInstance.objects.filter(type__identifier__startswith="bench.")
    assert set(left.values_list("type__identifier", "status").distinct()) == {
        (bench.HISTORY, Status.FINISHED)
    }


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
def test_atp_bench_reports_every_section_and_removes_its_filler(tmp_path):
    """A tiny full run: every section's figures are there and positive; nothing is left."""
    out = tmp_path / "bench.json"
    call_command(
        "atp_bench",
        *("--tasks", "20", "--runs", "1", "--latency-tasks", "5", "--json", str(out)),
        *("--drain", "processes:1,threads:2", "--backlog", "10,50", "--backlog-tasks", "20"),
        *("--chord-tasks", "20", "--pgbench-seconds", "1"),
        *("--claims", "5", "--claim-waiting", "40", "--claim-batch", "4"),
        *("--cleanup-tasks", "300"),
        stdout=io.StringIO(),
    )
    report = json.loads(out.read_text())
    assert set(report) >= {"enqueue", "drain", "latency", "backlog", "workflow", "cleanup"}
    if report["database"] == "postgresql":
        assert all(report["pgbench"][key] > 0 for key in ("c1_tps", "c4_tps"))
        swept = report["cleanup"]
        assert swept["tasks"] == 300 and swept["deleted_per_s"] > 0
        assert 0 < swept["claim_p50_before_ms"] <= swept["claim_p99_before_ms"]
    chord = report["workflow"]
    assert chord["tasks"] == 20 and 0 < chord["enqueue_s"] < chord["end_to_end_s"]
    on_postgres = report["database"] == "postgresql"
    backlog = report["backlog"]["by_backlog"]
    assert list(report["drain"]) == ["processes -n 1", "threads -n 2"]
    assert list(backlog) == ["10", "50"]
    for figures in [*report["drain"].values(), *backlog.values()]:
        assert figures["tasks"] == 20
        for key in ("wall_s", "wall_per_s", "steady_per_s", "startup_s", "exit_s"):
            assert figures[key] > 0, key
        if on_postgres:
            assert figures["commits_per_task"] > 0
        else:
            assert figures["commits_per_task"] is None
    assert all(
        figures["filler_claimed"] == 0 and figures["ratio"] > 0 for figures in backlog.values()
    )
    assert all(value > 0 for value in report["enqueue"].values())
    assert 0 < report["latency"]["p50_ms"] <= report["latency"]["p99_ms"]
    assert not TaskInstance.objects.filter(type__identifier__startswith="bench.").exists()
    assert not LogRecord.objects.exists()


@pytest.mark.postgres
def test_atp_cleanup_is_safe_beside_running_daemons(daemons, capsys):
    """A cron cleanup never touches tasks a live daemon runs, even past their timeout.

    The handlers run 1.5 s against a 1 s timeout, so their last update is older than the
    timeout: only the live-owner rule keeps cron away. The daemon applies the timeout to
    its own handlers at its heartbeats (issue 14.12), here every 6 s, so both tasks end
    before its first check (two tasks, not four: they must all run at once).
    """
    tracker.register_task_type(
        "acc.sleep", "tests.support.handlers.sleep", timeout=1, hard_time_limit=30
    )
    ids = [tracker.enqueue_task("acc.sleep", f"s{n}", {"seconds": 1.5}) for n in range(2)]
    daemons.start("-n", "2", settings={"HEARTBEAT_INTERVAL": 6, "WORKER_TIMEOUT": 20})
    runs = 0
    while TaskInstance.objects.filter(status=Status.FINISHED).count() < 2:
        call_command("atp_cleanup")
        assert capsys.readouterr().out.endswith("0 task(s) handled.\n")
        runs += 1
    assert runs > 0
    assert statuses(ids) == {Status.FINISHED}
    assert set(TaskInstance.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}


RETIRED_FILL = """
INSERT INTO atp_taskinstance (type_id, identifier, uuid, status, priority, queue, run_after,
    server_id, attempts, retries, enqueued_at, finished_at, updated_at)
SELECT %(type_id)s, 'old-' || n, gen_random_uuid(), %(finished)s, 0, 'default', %(moment)s,
    'gone', 1, 0, %(moment)s, %(moment)s, %(moment)s
FROM generate_series(1, %(count)s) AS n
"""


@pytest.mark.postgres
def test_a_daemon_sweeping_a_long_retention_backlog_keeps_claiming(daemons):
    """The daemon's retention sweep runs in slices between claims, never holding its loop."""
    from django.db import connection

    old = tracker.register_task_type("acc.old", "tests.support.handlers.noop", timeret=1)
    tracker.register_task_type("acc.new", "tests.support.handlers.noop")
    moment = timezone.now() - timedelta(days=1)
    params = {"type_id": old.pk, "finished": int(Status.FINISHED), "moment": moment}
    with connection.cursor() as cursor:
        cursor.execute(RETIRED_FILL, {**params, "count": 60_000})
    retired = TaskInstance.objects.filter(type=old)
    proc = daemons.start("-n", "2")  # its first idle sweep starts at once
    wait_until(lambda: retired.count() < 60_000, what="the daemon's sweep to start")
    new = tracker.enqueue_task("acc.new")
    wait_until(lambda: statuses([new]) == {Status.FINISHED}, what="the new task to run")
    # Claimed and run while the sweep had most of its rows still to delete.
    assert retired.count() > 0
    wait_until(lambda: not retired.exists(), timeout=120, what="the sweep to end")
    wait_until(lambda: "Deleted 60000 retired task(s)" in daemons.output(proc), timeout=10)
