"""atp.control against real ``manage.py atpd`` processes sharing the test database."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from atp import control, tracker
from atp.daemon.db import database_url
from atp.models import LogRecord, Status, TaskInstance
from tests.support.atpd_process import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def atpd(transactional_db, tmp_path):
    """Start ``manage.py atpd`` with extra arguments; every daemon is stopped at the end."""
    started = []

    def start(*args, server_id="daemon-1"):
        env = {**os.environ, "DATABASE_URL": database_url(), "ATP_LOG_LEVEL": "WARNING"}
        log = open(tmp_path / f"{server_id}.log", "w")  # closed at teardown
        command = [sys.executable, "manage.py", "atpd", "--server-id", server_id]
        command += ["--poll-interval", "0.1", *args]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        process.log_path = tmp_path / f"{server_id}.log"
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


def finish(process, timeout=60):
    """Wait for a daemon to exit; fail with its output if it did not exit cleanly."""
    code = process.wait(timeout=timeout)
    assert code == 0, f"atpd exited {code}:\n{process.log_path.read_text()}"


def status_of(task_id):
    return TaskInstance.objects.get(pk=task_id).status


def events_of(task_id):
    return list(
        LogRecord.objects.filter(instance_id=task_id).order_by("id").values_list("event", flat=True)
    )


@pytest.fixture
def types(transactional_db):
    tracker.register_task_type("it.echo", "tests.support.handlers.echo")
    tracker.register_task_type("it.wait", "tests.support.handlers.wait_for_abort")
    tracker.register_task_type("it.sleep", "tests.support.handlers.sleep")


def test_apply_returns_the_handlers_result(types, atpd):
    daemon = atpd("--max-tasks", "1")
    result = control.apply("it.echo", {"values": [1, 2.5, "x"], "ok": True}, timeout=60)
    assert result.ready and result.state == "SUCCESS"
    assert result.result == {"values": [1, 2.5, "x"], "ok": True}
    finish(daemon)


def test_http_apply_returns_the_handlers_result(types, atpd, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    User.objects.create_superuser("admin", password="admin-password")
    client = Client()
    client.login(username="admin", password="admin-password")
    daemon = atpd("--max-tasks", "1")
    reply = client.post(
        "/atp/api/task/apply/it.echo",
        json.dumps({"kwargs": {"n": 3}, "timeout": 60}),
        content_type="application/json",
    )
    body = reply.json()
    assert reply.status_code == 200 and (body["state"], body["result"]) == ("SUCCESS", {"n": 3})
    assert TaskInstance.objects.get(uuid=body["task-id"]).status == Status.FINISHED
    finish(daemon)


def test_revoked_waiting_task_never_runs(types, atpd):
    kept = control.async_apply("it.echo", "kept")
    dropped = control.async_apply("it.echo", "dropped")
    assert control.revoke(dropped.uuid)
    finish(atpd("--burst"))
    assert status_of(kept.id) == Status.FINISHED
    assert status_of(dropped.id) == Status.REVOKED
    assert events_of(dropped.id) == ["task-sent", "task-revoked"]


def test_revoke_of_a_running_task_ends_it_revoked(types, atpd):
    task = control.async_apply("it.wait", {"seconds": 30})
    daemon = atpd("--max-tasks", "1")
    wait_until(lambda: status_of(task.id) == Status.RUNNING)
    assert control.revoke(task.id)
    assert status_of(task.id) == Status.REVOKED
    finish(daemon)  # the handler sees is_aborted() and returns; the task stays REVOKED
    assert status_of(task.id) == Status.REVOKED
    assert "task-succeeded" not in events_of(task.id)


@pytest.mark.parametrize("signal_name, signum", [("SIGTERM", 15), ("SIGKILL", 9)])
def test_revoke_terminate_kills_the_running_handler(types, atpd, signal_name, signum):
    """The owning daemon sends the signal to the handler's process; the task ends REVOKED."""
    task = control.async_apply("it.wait", {"seconds": 60})
    daemon = atpd("--max-tasks", "1")
    wait_until(lambda: status_of(task.id) == Status.RUNNING)
    assert control.revoke(task.uuid, terminate=True, signal=signal_name)
    assert TaskInstance.objects.get(pk=task.id).kill_signal == signum
    wait_until(lambda: status_of(task.id) == Status.REVOKED, timeout=20)
    finish(daemon)
    revoked = LogRecord.objects.get(instance_id=task.id, event="task-revoked")
    assert (revoked.fields["terminated"], revoked.fields["signum"]) == (True, signum)
    assert "task-succeeded" not in events_of(task.id)


def test_abort_is_honoured_by_a_cooperative_handler(types, atpd):
    task = control.async_apply("it.wait", {"seconds": 30})
    daemon = atpd("--max-tasks", "1")
    wait_until(lambda: status_of(task.id) == Status.RUNNING)
    assert control.abort(task.uuid)
    finish(daemon)
    assert status_of(task.id) == Status.REVOKED
    events = events_of(task.id)
    assert events[-1] == "task-revoked" and "task-succeeded" not in events
    assert control.get_result(task.id).state == "REVOKED"


def test_expired_task_never_runs(types, atpd):
    expired = control.async_apply("it.echo", "late", expires=0.2)
    fresh = control.async_apply("it.echo", "on time", expires=600)
    time.sleep(0.3)
    finish(atpd("--burst"))
    assert status_of(expired.id) == Status.REVOKED
    assert events_of(expired.id) == ["task-sent", "task-revoked"]
    assert LogRecord.objects.filter(instance_id=expired.id).latest("id").fields["expired"] is True
    assert status_of(fresh.id) == Status.FINISHED


def test_countdown_task_waits_for_its_time(types, atpd):
    later = control.async_apply("it.echo", "later", countdown=600)
    finish(atpd("--burst"))
    assert status_of(later.id) == Status.ACCEPTED


@pytest.mark.postgres
def test_rate_limit_holds_across_two_daemons(types, atpd):
    control.rate_limit("it.sleep", "6/m")
    tasks = [control.async_apply("it.sleep", {"seconds": 0.5}) for _ in range(12)]
    daemons = [atpd("--burst", server_id=f"daemon-{n}") for n in (1, 2)]
    for daemon in daemons:
        finish(daemon)
    ran = TaskInstance.objects.filter(pk__in=[task.id for task in tasks], status=Status.FINISHED)
    assert ran.count() == 6
    # Both daemons claimed some: a per-daemon limit would have let 12 run.
    assert set(ran.values_list("server_id", flat=True)) == {"daemon-1", "daemon-2"}
    waiting = TaskInstance.objects.filter(
        pk__in=[task.id for task in tasks], status=Status.ACCEPTED
    )
    assert waiting.count() == 6


@pytest.mark.postgres
def test_racing_daemons_never_claim_past_the_rate_limit(types, atpd):
    # Instant handlers make the daemons' claim transactions overlap: the count-then-claim
    # must be atomic across them, or two would take the same last slot.
    tracker.register_task_type("it.noop", "tests.support.handlers.noop", rate_limit="6/m")
    tasks = [control.async_apply("it.noop") for _ in range(40)]
    daemons = [atpd("--burst", server_id=f"daemon-{n}") for n in range(4)]
    for daemon in daemons:
        finish(daemon)
    claimed = TaskInstance.objects.filter(pk__in=[task.id for task in tasks]).exclude(
        status=Status.ACCEPTED
    )
    assert claimed.count() == 6
