"""Real OS processes racing on PostgreSQL: claims are exclusive, queue limits hold.

Each racer is ``python -m tests.integration.race_worker`` on the test database; all of them
connect first and then start at one common moment, so their transactions overlap.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django.db.models import Count

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance
from tests.support.factories import TaskInstanceFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROCESSES = 8
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Seconds any one racer may take; the whole race normally takes a few seconds.
TIMEOUT = 45


def _database_url() -> str:
    """A DATABASE_URL naming the database this test runs on (the *test* database)."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    port = f":{db['PORT']}" if db.get("PORT") else ""
    user = quote(db.get("USER") or "", safe="")
    return f"postgres://{user}{password}@{db['HOST'] or 'localhost'}{port}/{db['NAME']}"


def _race(argvs: list[list[str]]) -> list:
    """Run one racer per argument list, start them together and return their reports."""
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "DJANGO_SETTINGS_MODULE": "settings",
        "ATP_LOG_LEVEL": "WARNING",
    }
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.race_worker", *argv],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        for racer in racers:
            line = racer.stdout.readline()
            assert line == "ready\n", racer.stderr.read()
        # Everyone gets the start time before anyone is waited for.
        start_at = f"{time.time() + 0.2}\n"
        for racer in racers:
            racer.stdin.write(start_at)
            racer.stdin.flush()
        outputs = [racer.communicate(timeout=TIMEOUT) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    reports = []
    for racer, (out, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err
        reports.append(json.loads(out.splitlines()[-1]))
    return reports


def test_every_task_is_claimed_exactly_once_by_racing_daemons(db):
    task_type = tracker.register_task_type("race", "tests.support.handlers.noop")
    TaskInstance.objects.bulk_create(
        TaskInstanceFactory.build(type=task_type, identifier=f"task-{n}") for n in range(2000)
    )
    all_ids = set(TaskInstance.objects.values_list("pk", flat=True))
    assert len(all_ids) == 2000

    server_ids = [f"server-{n}" for n in range(PROCESSES)]
    reports = dict(zip(server_ids, _race([["claim", s, "7"] for s in server_ids]), strict=True))

    claimed = [task_id for ids in reports.values() for task_id in ids]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert set(claimed) == all_ids
    owner = {task_id: server_id for server_id, ids in reports.items() for task_id in ids}
    rows = TaskInstance.objects.values_list("pk", "status", "server_id")
    assert all(status == Status.SCHEDULED and server == owner[pk] for pk, status, server in rows)
    received = (
        LogRecord.objects.filter(event="task-received")
        .values("instance")
        .annotate(n=Count("id"))
        .values_list("instance", "n")
    )
    assert dict(received) == dict.fromkeys(all_ids, 1)
    assert LogRecord.objects.count() == 2000
    assert sum(1 for ids in reports.values() if ids) > 1, "only one process got work"


def _enqueue_race(type_identifier: str) -> tuple[int, int]:
    reports = _race([["enqueue", type_identifier, f"p{n}", "20"] for n in range(PROCESSES)])
    return sum(r["ok"] for r in reports), sum(r["full"] for r in reports)


def test_racing_enqueuers_never_overshoot_a_types_queue_limit(db):
    tracker.register_task_type("limited", "tests.support.handlers.noop", max_queue_size=50)

    accepted, refused = _enqueue_race("limited")

    assert (accepted, refused) == (50, PROCESSES * 20 - 50)
    assert tracker.get_queue_size("limited") == 50
    assert TaskInstance.objects.count() == 50
    assert LogRecord.objects.filter(event="task-sent").count() == 50


def test_racing_enqueuers_never_overshoot_the_shared_queue_limit(db):
    tracker.register_task_type("shared", "tests.support.handlers.noop")
    assert tracker.get_max_queue_size("shared") == 64  # the settings' default

    accepted, refused = _enqueue_race("shared")

    assert (accepted, refused) == (64, PROCESSES * 20 - 64)
    assert tracker.get_queue_size() == 64
    assert TaskInstance.objects.count() == 64
    assert LogRecord.objects.filter(event="task-sent").count() == 64
