"""atpd's time limits (issue 14.12): ``timeout`` is inactivity, ``hard_time_limit`` wall time."""

import pytest

from atp import tracker
from atp.models import Status, TaskInstance

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_heartbeating_handler_runs_past_its_timeout_and_finishes(daemons):
    tracker.register_task_type(
        "acc.beat", "tests.support.handlers.heartbeating_sleep", timeout=2, maxrestart=0
    )
    task_id = tracker.enqueue_task("acc.beat", "long", {"seconds": 4, "every": 0.3})
    proc = daemons.start("--burst", "-n", "1")
    assert proc.wait(timeout=90) == 0, daemons.output(proc)
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.attempts) == (Status.FINISHED, 1), daemons.output(proc)
    assert (task.finished_at - task.started_at).total_seconds() >= 4


def test_a_silent_handler_is_recovered_as_a_zombie(daemons):
    tracker.register_task_type(
        "acc.silent", "tests.support.handlers.sleep", timeout=2, maxrestart=1
    )
    task_id = tracker.enqueue_task("acc.silent", "quiet", {"seconds": 120})
    proc = daemons.start("--burst", "-n", "1")
    assert proc.wait(timeout=90) == 0, daemons.output(proc)
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.attempts) == (Status.FAILED, 2)
    retried = task.log.get(event="task-retried")
    assert "silent for" in retried.message and "timeout of 2 s" in retried.message
    assert retried.fields["exception"] == "TimeoutError"
    failed = task.log.get(event="task-failed")
    assert "maxrestart" in failed.message and "silent for" in failed.message
    assert "Killing task" in daemons.output(proc)


def test_the_hard_time_limit_kills_a_handler_however_often_it_heartbeats(daemons):
    tracker.register_task_type(
        "acc.hard",
        "tests.support.handlers.heartbeating_sleep",
        timeout=60,
        hard_time_limit=1.5,
        maxrestart=0,
    )
    task_id = tracker.enqueue_task("acc.hard", "capped", {"seconds": 120, "every": 0.2})
    proc = daemons.start("--burst", "-n", "1")
    assert proc.wait(timeout=90) == 0, daemons.output(proc)
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.attempts) == (Status.FAILED, 1)
    failed = task.log.get(event="task-failed")
    assert "hard time limit of 1.5 s" in failed.message
    assert failed.fields["exception"] == "TimeLimitExceeded"
