"""ATP behind a real PgBouncer in transaction mode: real atpd daemons, enqueues, sweeps.

Every test runs its own queries and its daemons through the private PgBouncer of
``tests.support.pgbouncer`` (a pool of a few server sessions, shared by all of them); only
the daemons' LISTEN connections go directly to PostgreSQL, when a test gives them one.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from atp import tracker
from atp.daemon.db import database_url
from atp.daemon.wakeup import PROBE_TIMEOUT
from atp.models import LogRecord, Status, TaskInstance, Worker
from tests.acceptance.test_daemon import assert_attempts_never_overlap, attempts_from
from tests.acceptance.test_wakeup import listening_backends
from tests.support.atpd_process import FAST, REPO, wait_until
from tests.support.pgbouncer import POOL_SIZE

pytestmark = pytest.mark.postgres

#: The daemons' own limits (atp.daemon.db.limit_daemon_sessions), which must never reach a
#: server session: another client's transaction on it would inherit them.
DAEMON_LIMITS = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")


def count(status) -> int:
    return TaskInstance.objects.filter(status=status).count()


def server_session_settings(bouncer) -> list[dict]:
    """The daemon limits' values on every server session of the pool, read through it.

    ``POOL_SIZE`` clients each open a transaction at the same time, so each holds another
    server session: together they read every session the pool has.
    """
    clients = [bouncer.connect(connection.settings_dict["NAME"]) for _ in range(POOL_SIZE)]
    try:
        found = []
        for client in clients:
            client.autocommit = False  # each keeps its transaction, so its server session
            with client.cursor() as cursor:
                cursor.execute(
                    "SELECT " + ", ".join("current_setting(%s)" for _ in DAEMON_LIMITS),
                    DAEMON_LIMITS,
                )
                found.append(dict(zip(DAEMON_LIMITS, cursor.fetchone(), strict=True)))
        return found
    finally:
        for client in clients:
            client.close()


def test_daemons_run_hundreds_of_tasks_through_pgbouncer(daemons, through_pgbouncer):
    """Enqueue one by one and in bulk (queue limit: advisory locks; the prepared enqueue
    statement), claim, run, record: every task ends FINISHED once, and no daemon's limits
    leak into the pool's server sessions."""
    bouncer, direct = through_pgbouncer
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop", max_queue_size=1000)
    tracker.register_task_type("acc.echo", "tests.support.handlers.echo", max_queue_size=1000)
    ids = [tracker.enqueue_task("acc.noop", f"one-{n}") for n in range(150)]
    ids += tracker.enqueue_tasks("acc.echo", [(f"bulk-{n}", {"n": n}) for n in range(150)])
    listen = {"LISTEN_DATABASE_URL": direct}
    procs = [daemons.start("-n", "2", env=listen) for _ in range(2)]
    procs.append(daemons.start("-n", "2", "--pool", "threads", env=listen))

    wait_until(lambda: count(Status.FINISHED) == 300, timeout=90, what="300 tasks finished")
    assert TaskInstance.objects.filter(pk__in=ids, attempts=1).count() == 300
    succeeded = LogRecord.objects.filter(event="task-succeeded")
    assert succeeded.count() == 300
    assert succeeded.values("instance").distinct().count() == 300
    echoed = TaskInstance.objects.get(identifier="bulk-7")
    assert bytes(echoed.response.data).decode() == repr({"n": 7})
    ran_on = set(TaskInstance.objects.values_list("server_id", flat=True))
    assert len(ran_on) >= 2, "the work was shared between daemons"
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, daemons.output(proc)
    for values in server_session_settings(bouncer):
        assert values == {name: "0" for name in DAEMON_LIMITS}


def test_the_tasks_of_a_killed_daemon_are_recovered_through_pgbouncer(daemons, through_pgbouncer):
    """A daemon killed with SIGKILL: ``atp_cleanup`` (through the pooler too) re-enqueues
    its running tasks once its heartbeat is older than the worker timeout; another daemon
    runs them. No attempt of a task overlaps another."""
    log_path = Path(daemons.log_dir) / "attempts.jsonl"
    tracker.register_task_type("acc.record", "tests.support.handlers.record_attempt")
    ids = [
        tracker.enqueue_task("acc.record", f"long-{n}", {"log": str(log_path), "seconds": 60})
        for n in range(3)
    ]
    victim = daemons.start("-n", "3")
    wait_until(lambda: count(Status.RUNNING) == 3, what="the victim to run the three tasks")
    wait_until(
        lambda: log_path.exists() and len(log_path.read_text().splitlines()) == 3,
        what="the handlers to start",
    )
    victim.kill()  # the daemon only: its children die with it
    killed_at = time.time()
    victim.wait()
    TaskInstance.objects.filter(pk__in=ids).update(input={"log": str(log_path), "seconds": 0})

    time.sleep(FAST["WORKER_TIMEOUT"] + 0.5)  # its heartbeat is now older than the timeout
    swept = subprocess.run(
        [sys.executable, "manage.py", "atp_cleanup"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": database_url(), "ATP_SETTINGS": json.dumps(FAST)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert swept.returncode == 0, swept.stderr
    assert count(Status.ACCEPTED) == 3, swept.stdout
    rescuer = daemons.start("-n", "2")
    wait_until(lambda: count(Status.FINISHED) == 3, what="the recovered tasks to run again")
    for task in TaskInstance.objects.filter(pk__in=ids):
        assert task.attempts == 2
        assert "lost: no heartbeat" in task.log.get(event="task-retried").message
    assert_attempts_never_overlap(attempts_from(log_path), killed_at=killed_at)
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=30) == 0, daemons.output(rescuer)


def test_an_idle_daemon_behind_pgbouncer_is_woken_through_its_direct_listen_connection(
    daemons, through_pgbouncer
):
    """With a 60 s poll interval only NOTIFY can start the task quickly: the enqueue's
    NOTIFY goes through the pooler (delivered on commit), the LISTEN is direct."""
    _, direct = through_pgbouncer
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop")
    proc = daemons.start("-n", "1", "--poll-interval", "60", env={"LISTEN_DATABASE_URL": direct})
    wait_until(lambda: "atpd started" in daemons.output(proc), what="the daemon to start")
    wait_until(listening_backends, what="the daemon's LISTEN connection")
    time.sleep(PROBE_TIMEOUT + 0.5)  # past its test notification: it kept listening
    task_id = tracker.enqueue_task("acc.noop", "wake-up")
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == Status.FINISHED,
        timeout=20,
        what="the idle daemon to be woken by NOTIFY",
    )
    assert "LISTEN heard nothing" not in daemons.output(proc)
    assert proc.poll() is None, daemons.output(proc)


def test_without_a_direct_listen_connection_the_daemon_says_so_and_polls(
    daemons, through_pgbouncer
):
    """LISTEN through the pooler hears nothing: the daemon notices (its own test
    notification never arrives), says what to set, stops listening and polls."""
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop")
    proc = daemons.start("-n", "1", "--poll-interval", "0.5")
    wait_until(
        lambda: "LISTEN heard nothing" in daemons.output(proc),
        timeout=PROBE_TIMEOUT + 30,
        what="the daemon to give its LISTEN up",
    )
    assert "ATP['LISTEN_DATABASE']" in daemons.output(proc)
    ids = [tracker.enqueue_task("acc.noop", f"polled-{n}") for n in range(5)]
    wait_until(lambda: count(Status.FINISHED) == 5, timeout=30, what="the tasks to be polled")
    assert set(TaskInstance.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
    assert proc.poll() is None, daemons.output(proc)


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
def test_two_thousand_tasks_on_eight_daemons_behind_pgbouncer_survive_kills(
    daemons, through_pgbouncer, tmp_path
):
    """The crash test of test_daemon.py, with 8 daemons whose clients share the pool's few
    server sessions: three daemons are killed mid-run (SIGKILL) and two others started.
    Every task ends FINISHED with exactly one success, and no two attempts of a task ran at
    the same time."""
    bouncer, direct = through_pgbouncer
    log_path = tmp_path / "attempts.jsonl"
    tracker.register_task_type(
        "acc.record", "tests.support.handlers.record_attempt", max_queue_size=5000, maxrestart=3
    )
    listen = {"LISTEN_DATABASE_URL": direct}
    procs = [daemons.start("-n", "2", env=listen) for _ in range(8)]
    for proc in procs:
        wait_until(lambda proc=proc: "atpd started" in daemons.output(proc), what="8 daemons")
    total = 2000
    tracker.enqueue_tasks(
        "acc.record", [(f"t{n}", {"log": str(log_path), "seconds": 0.01}) for n in range(total)]
    )
    name = connection.settings_dict["NAME"]
    clients = [row for row in bouncer.show("CLIENTS") if row["database"] == name]
    servers = [row for row in bouncer.show("SERVERS") if row["database"] == name]
    assert len(clients) > POOL_SIZE >= len(servers), "the daemons share the pool's sessions"

    killed_at = []
    for victim, finished in zip(procs[:3], (300, 700, 1100), strict=True):
        wait_until(lambda finished=finished: count(Status.FINISHED) >= finished, timeout=90,
                   what=f"{finished} tasks done")  # fmt: skip
        running = TaskInstance.objects.filter(
            status=Status.RUNNING,
            server_id__in=Worker.objects.filter(pid=victim.pid).values("server_id"),
        )
        wait_until(running.exists, what="the victim to be running a task")
        victim.kill()  # the daemon only: its children die with it
        killed_at.append(time.time())
        victim.wait()
        procs.append(daemons.start("-n", "2", env=listen))

    wait_until(lambda: count(Status.FINISHED) == total, timeout=120, what="all tasks finished")
    assert TaskInstance.objects.exclude(status=Status.FINISHED).count() == 0
    succeeded = LogRecord.objects.filter(event="task-succeeded")
    assert succeeded.count() == total
    assert succeeded.values("instance").distinct().count() == total
    assert TaskInstance.objects.filter(attempts__gt=1).exists(), "the victims' tasks restarted"
    assert LogRecord.objects.filter(event="task-retried", message__contains="lost").count() >= 3
    attempts = attempts_from(log_path)
    assert_attempts_never_overlap(attempts, killed_at=max(killed_at))
    for task, number in [key for key, times in attempts.items() if "end" not in times]:
        assert TaskInstance.objects.get(pk=task).attempts > number
    for proc in procs[3:]:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, daemons.output(proc)
