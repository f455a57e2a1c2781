"""How atpd starts: settings from settings.configure(), children that cannot start, bad settings.

Each daemon here is a real process; a refused start must leave every task as it was.
"""

import json
import os
import subprocess
import sys

import pytest

from atp import tracker
from atp.daemon.db import database_url
from atp.models import LogRecord, Status, TaskInstance, Worker
from tests.support.atpd_process import REPO

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = REPO / "tests" / "support" / "configured_atpd.py"


def run_configured_atpd(*options, break_children=False) -> subprocess.CompletedProcess:
    """Run tests/support/configured_atpd.py (settings.configure(), no settings module)."""
    env = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
    if break_children:
        env["ATP_TEST_BREAK_CHILDREN"] = "1"
    return subprocess.run(
        [sys.executable, str(SCRIPT), database_url(), *options],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_untouched(ids) -> None:
    """Every task still waits, never claimed, with only its task-sent record; no daemon row."""
    tasks = TaskInstance.objects.filter(pk__in=ids)
    assert set(tasks.values_list("status", "attempts", "server_id")) == {(Status.ACCEPTED, 0, "")}
    assert LogRecord.objects.filter(instance__in=ids).count() == len(ids)
    assert not Worker.objects.exists()


def test_children_of_a_daemon_configured_in_code_get_its_settings():
    tracker.register_task_type("cfg.echo", "tests.support.handlers.echo", maxrestart=0)
    ids = [tracker.enqueue_task("cfg.echo", f"c{n}", {"n": n}) for n in range(4)]
    done = run_configured_atpd("--burst", "-n", "2")
    assert done.returncode == 0, done.stderr
    tasks = TaskInstance.objects.filter(pk__in=ids)
    assert set(tasks.values_list("status", "attempts")) == {(Status.FINISHED, 1)}, done.stderr
    assert tracker.get_task_response("cfg.echo", "c2") == (b"{'n': 2}", "text/plain")


def test_a_daemon_whose_children_cannot_start_stops_at_once_and_touches_no_task():
    tracker.register_task_type("cfg.echo", "tests.support.handlers.echo")
    ids = [tracker.enqueue_task("cfg.echo", f"c{n}") for n in range(3)]
    done = run_configured_atpd("--burst", "-n", "2", break_children=True)
    assert done.returncode == 1, done.stderr
    assert "atpd cannot start: the pool's child processes cannot start" in done.stderr
    assert "loads only in the daemon's process" in done.stderr  # the children's own reason
    assert_untouched(ids)


BAD_SETTINGS = [
    ({"WORKER_TIMEOUT": -5}, "ATP['WORKER_TIMEOUT'] must be a number greater than 0"),
    ({"POLL_INTERVAL": "fast"}, "ATP['POLL_INTERVAL'] must be a number greater than 0"),
    ({"CLEANUP_BATCH_SIZE": -1}, "ATP['CLEANUP_BATCH_SIZE'] must be an integer of at least 1"),
    ({"EVENTS_BROKER_URL": "http://127.0.0.1:1/"}, "must be a redis:// or amqp:// URL"),
    ({"HEARTBEAT_INTERVAL": 5, "WORKER_TIMEOUT": 4}, "must be smaller than ATP['WORKER_TIMEOUT']"),
]


@pytest.mark.parametrize("settings, message", BAD_SETTINGS, ids=lambda value: str(value)[:30])
def test_atpd_refuses_settings_that_fail_the_check(daemons, settings, message):
    tracker.register_task_type("cfg.echo", "tests.support.handlers.echo")
    ids = [tracker.enqueue_task("cfg.echo", "waits")]
    proc = daemons.start("--burst", settings=settings)
    assert proc.wait(timeout=120) == 1
    assert message in daemons.output(proc)
    assert_untouched(ids)


def test_atpd_under_call_command_refuses_bad_settings_too():
    """call_command skips Django's system checks; atpd runs ATP's own before anything."""
    tracker.register_task_type("cfg.echo", "tests.support.handlers.echo")
    ids = [tracker.enqueue_task("cfg.echo", "waits")]
    code = (
        "import django, sys; django.setup();"
        "from django.core.management import call_command, CommandError\n"
        "try: call_command('atpd', '--burst')\n"
        "except CommandError as exc: sys.exit(str(exc))"
    )
    env = dict(os.environ, DATABASE_URL=database_url())
    env["ATP_SETTINGS"] = json.dumps({"CLEANUP_BATCH_SIZE": 0})
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "atpd refuses to start: ATP['CLEANUP_BATCH_SIZE'] must be an integer" in done.stderr
    assert_untouched(ids)
