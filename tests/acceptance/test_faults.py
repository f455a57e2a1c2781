"""Faults the fleet must survive, with real daemons: a frozen peer, an outage, a lost reply,
an error in any step of the loop, a reused server id (issues 14 and 15)."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance, TaskType
from tests.support.atpd_process import FAST, REPO, wait_until
from tests.support.tcp_proxy import CommitCutter

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(ids) -> dict:
    return dict(TaskInstance.objects.filter(pk__in=ids).values_list("pk", "status"))


def all_finished(ids) -> bool:
    return set(statuses(ids).values()) == {Status.FINISHED}


def process_state(pid: int) -> str:
    """The one-letter state of a process (``T``: stopped), from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.postgres
@pytest.mark.parametrize("route", ["direct", "pgbouncer"])
def test_a_daemon_frozen_while_it_holds_a_row_lock_stops_no_other_daemon(daemons, route, request):
    """15.1: the frozen daemon's locked rows are skipped; the server ends its session.

    The first daemon SIGSTOPs itself while its transaction holds the row of the task it
    was recording. The second keeps claiming and running tasks although it judges the
    first lost (its recovery skips the locked row instead of waiting for it), and recovers
    that task once the server has ended the frozen session (idle in transaction).
    Through PgBouncer in transaction mode too: the daemons' limits are set per transaction,
    so the server session the frozen transaction holds has them.
    """
    if route == "pgbouncer":
        request.getfixturevalue("through_pgbouncer")  # the test and its daemons
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop")
    tracker.register_task_type("acc.sleep", "tests.support.handlers.sleep", max_queue_size=100)
    frozen_task = tracker.enqueue_task("acc.noop", "freeze")
    frozen = daemons.start("-n", "1", faults={"freeze-on-record": "freeze"})
    wait_until(lambda: process_state(frozen.pid) == "T", what="the first daemon to freeze")
    healthy = daemons.start("-n", "2")
    wait_until(lambda: "atpd started" in daemons.output(healthy), what="the second daemon")
    # Past the worker timeout the healthy daemon judges the frozen one lost: from then on,
    # every heartbeat of the old code waited for the frozen daemon's row lock.
    time.sleep(FAST["WORKER_TIMEOUT"] + 1)
    ids = [tracker.enqueue_task("acc.sleep", f"s{n}", {"seconds": 0.1}) for n in range(20)]
    wait_until(lambda: all_finished(ids), timeout=90, what="the healthy daemon to run them")
    wait_until(
        lambda: TaskInstance.objects.get(pk=frozen_task).status == Status.FINISHED,
        timeout=60,
        what="the frozen daemon's task to be recovered and run",
    )
    assert process_state(frozen.pid) == "T"  # frozen all along
    assert TaskInstance.objects.get(pk=frozen_task).attempts == 2
    assert "Recovered acc.noop::freeze from a lost daemon" in daemons.output(healthy)


@pytest.mark.postgres
def test_an_outage_longer_than_the_worker_timeout_restarts_no_running_task(
    private_postgres, daemons
):
    """15.2: after the database comes back, no daemon judges a peer lost by its old heartbeat."""
    settings = {"WORKER_TIMEOUT": 8, "HEARTBEAT_INTERVAL": 0.5}
    tracker.register_task_type("acc.sleep", "tests.support.handlers.sleep", timeout=300)
    ids = [tracker.enqueue_task("acc.sleep", f"s{n}", {"seconds": 20}) for n in range(4)]
    first = daemons.start("-n", "2", settings=settings)
    wait_until(
        lambda: TaskInstance.objects.filter(status=Status.RUNNING).count() == 2,
        what="the first daemon to take two tasks",
    )
    second = daemons.start("-n", "2", settings=settings)
    wait_until(
        lambda: set(statuses(ids).values()) == {Status.RUNNING},
        what="both daemons to run two tasks each",
    )
    assert TaskInstance.objects.values("server_id").distinct().count() == 2
    connection.close()
    private_postgres.stop()
    time.sleep(settings["WORKER_TIMEOUT"] + 2)  # every heartbeat is older than the timeout
    private_postgres.start()
    wait_until(lambda: all_finished(ids), timeout=120, what="the tasks to finish")
    assert set(TaskInstance.objects.values_list("attempts", flat=True)) == {1}
    assert not LogRecord.objects.filter(event="task-retried").exists()
    for proc in (first, second):
        assert "Database back after" in daemons.output(proc)
        assert "Recovered" not in daemons.output(proc)
        assert "This daemon was declared lost" not in daemons.output(proc)


@pytest.mark.postgres
def test_a_claim_whose_commit_reply_is_lost_is_given_back_and_run(private_postgres, daemons):
    """15.3: the claim committed, its reply never came; the daemon reconciles after reconnecting."""
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop")
    ids = [tracker.enqueue_task("acc.noop", f"n{n}") for n in range(3)]
    name = connection.settings_dict["NAME"]
    with CommitCutter("127.0.0.1", private_postgres.port) as proxy:
        proxy.arm(b"claimed AS (")  # the batch claim statement (atp/tracker/batch_sql.py)
        proc = daemons.start("-n", "4", url=f"postgres://postgres@127.0.0.1:{proxy.port}/{name}")
        wait_until(proxy.cut.is_set, what="the claim's COMMIT to be cut")
        wait_until(lambda: all_finished(ids), timeout=60, what="the orphans to be run")
    output = daemons.output(proc)
    assert "Database unavailable" in output
    assert output.count("was not in this daemon's pool: given back") == 3
    # The lost claim and the real run are both logged; the lost one used no restart.
    assert LogRecord.objects.filter(event="task-started").count() == 6
    assert set(TaskInstance.objects.values_list("attempts", flat=True)) == {1}


STEP_FAULTS = {
    # step: (fault, its argument, what the log says)
    "claim": ("claim", "acc.poison", "Claims of task type id"),
    "hand-over": ("hand-over", "poison", "could not be handed to the pool"),
    "outcome": ("outcome", "poison", "Recording the outcome of acc.echo::poison"),
    "sweep": ("sweep", 3, "Error in sweep"),
    "heartbeat": ("heartbeat", 3, "Error in heartbeat"),
}


@pytest.mark.parametrize("step", sorted(STEP_FAULTS))
def test_an_error_in_a_step_of_the_loop_is_contained(daemons, step):
    """14.2 + 15.5: an error (not an outage) in any step stops neither the daemon nor others.

    The poisoned task ends by its rules (FAILED here: no retries, no restarts) or its type is
    held back; every other task runs; the log names the step and has the traceback.
    """
    fault, argument, logged = STEP_FAULTS[step]
    tracker.register_task_type("acc.echo", "tests.support.handlers.echo", maxrestart=0)
    tracker.register_task_type("acc.poison", "tests.support.handlers.echo", maxrestart=0)
    poison = (
        tracker.enqueue_task("acc.poison", "p0")
        if step == "claim"
        else tracker.enqueue_task("acc.echo", "poison", {"poison": True})
    )
    ids = [tracker.enqueue_task("acc.echo", f"e{n}", {"n": n}) for n in range(10)]
    proc = daemons.start("-n", "2", settings={"CLEANUP_EVERY": 1}, faults={fault: argument})
    wait_until(lambda: all_finished(ids), timeout=60, what="the healthy tasks to run")
    wait_until(lambda: logged in daemons.output(proc), timeout=30, what=f"the log of {step}")
    more = [tracker.enqueue_task("acc.echo", f"later{n}") for n in range(5)]
    wait_until(lambda: all_finished(more), timeout=60, what="the daemon to serve on")
    assert proc.poll() is None, daemons.output(proc)
    output = daemons.output(proc)
    assert "Traceback" in output and "PlantedFault" in output
    task = TaskInstance.objects.get(pk=poison)
    if step == "claim":
        assert task.status == Status.ACCEPTED  # held back, never claimed
    elif step in ("hand-over", "outcome"):
        assert task.status == Status.FAILED, output
    else:
        assert task.status == Status.FINISHED


@pytest.mark.postgres
def test_a_huge_rate_limit_stored_in_the_database_stops_no_other_type(daemons):
    """15.5: a rate the API would refuse, written straight into the table."""
    tracker.register_task_type("acc.echo", "tests.support.handlers.echo")
    tracker.register_task_type("acc.limited", "tests.support.handlers.echo")
    TaskType.objects.filter(identifier="acc.limited").update(rate_limit="99999999999999999999/s")
    limited = tracker.enqueue_task("acc.limited", "l0")
    ids = [tracker.enqueue_task("acc.echo", f"e{n}") for n in range(10)]
    proc = daemons.start("-n", "2")
    wait_until(lambda: all_finished(ids), timeout=60, what="the other type's tasks to run")
    assert proc.poll() is None, daemons.output(proc)
    # The limited type is either run (the rate read as no limit) or held back, not a stall.
    assert TaskInstance.objects.get(pk=limited).status in (Status.FINISHED, Status.ACCEPTED)


def test_a_second_daemon_with_a_live_server_id_refuses_to_start(daemons):
    """14.4: it exits non-zero with a clear error; the first is not disturbed."""
    tracker.register_task_type("acc.sleep", "tests.support.handlers.sleep")
    task_id = tracker.enqueue_task("acc.sleep", "long", {"seconds": 8})
    # A worker timeout the first daemon's heartbeats surely keep within, however loaded
    # the machine: the second must meet a live row.
    settings = {"WORKER_TIMEOUT": 30, "HEARTBEAT_INTERVAL": 0.5}
    first = daemons.start("-n", "1", "--server-id", "twin", settings=settings)
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == Status.RUNNING,
        what="the first daemon to run the task",
    )
    second = daemons.start("-n", "1", "--server-id", "twin", settings=settings)
    assert second.wait(timeout=60) == 1
    assert "server id 'twin' is in use by a live daemon" in daemons.output(second)
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == Status.FINISHED,
        what="the first daemon's task to finish",
    )
    assert TaskInstance.objects.get(pk=task_id).attempts == 1
    assert first.poll() is None
    assert "This daemon was declared lost" not in daemons.output(first)
    assert "took over server id" not in daemons.output(first)


def _manage(*args, env, timeout=120) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


ENQUEUE_ECHOES = """
from atp import tracker
from atp.models import TaskInstance
TaskInstance.objects.all().delete()
tracker.register_task_type("acc.echo", "tests.support.handlers.echo", max_queue_size=100)
for n in range(12):
    tracker.enqueue_task("acc.echo", f"e{n}", {"n": n})
"""
COUNT_OUTCOMES = """
import json
from atp.models import TaskInstance
print(json.dumps(list(TaskInstance.objects.values_list("status", "attempts"))))
"""


def test_sqlite_lock_timeouts_under_django_default_settings_cost_no_attempt(tmp_path):
    """13.6: two daemons on SQLite without IMMEDIATE transactions (``timeout`` 5).

    Their writes (a handler's response, the daemon's claims and records) collide and fail
    with "database is locked" at once; each is retried, never counted as an attempt.
    """
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.support.sqlite_default_settings"
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'default.sqlite3'}"
    env["ATP_SETTINGS"] = json.dumps(FAST)
    _manage("migrate", "-v0", env=env)
    for _ in range(3):
        _manage("shell", "-c", ENQUEUE_ECHOES, env=env)
        burst = [sys.executable, "manage.py", "atpd", "--burst", "-n", "2"]
        runs = [
            subprocess.Popen(
                burst, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            for _ in range(2)
        ]
        for run in runs:
            assert run.wait(timeout=120) == 0, run.stderr.read()
            run.stderr.close()
        printed = _manage("shell", "-c", COUNT_OUTCOMES, env=env)
        outcomes = json.loads(printed.strip().splitlines()[-1])
        assert outcomes == [[Status.FINISHED, 1]] * 12


@pytest.mark.postgres
def test_the_soak_runs_its_faults_and_counts(tmp_path):
    """A tiny ``atp_soak``: every fault strikes, and the counts add up (the soak's own
    private cluster; the test database is not touched)."""
    out = tmp_path / "soak.json"
    call_command(
        "atp_soak", "--tasks", "24", "--daemons", "2", "--json", str(out), stdout=io.StringIO()
    )
    figures = json.loads(out.read_text())
    assert len(figures["faults"]) == 4
    assert figures["finished"] + figures["lost"] + figures["stuck"] == 24
    assert (figures["lost"], figures["stuck"], figures["duplicated"], figures["overlapping"]) == (
        0,
        0,
        0,
        0,
    )
    assert figures["success_events_per_task"] == {"1": 24}
