"""Retries through a real atpd: backoff delays, then success on the third attempt."""

import pytest

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance
from tests.support.atpd_process import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_daemon_retries_with_backoff_and_succeeds_on_the_third_attempt(daemons):
    tracker.register_task_type(
        "acc.flaky",
        "tests.support.handlers.flaky",
        max_retries=4,
        retry_backoff=0.2,
        retry_backoff_max=5,
    )
    task_id = tracker.enqueue_task("acc.flaky", "x", {"succeed_on": 3})
    proc = daemons.start("-n", "1")
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == Status.FINISHED,
        timeout=30,
        what="the flaky task to finish",
    )
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.attempts, task.retries) == (3, 2), daemons.output(proc)
    log = list(LogRecord.objects.filter(instance_id=task_id).order_by("id"))
    events = [record.event for record in log]
    assert events.count("task-retried") == 2 and events.count("task-started") == 3
    retried = [record for record in log if record.event == "task-retried"]
    assert [r.message.split(" in ")[0] for r in retried] == ["Retry 1 of 4", "Retry 2 of 4"]
    # The daemon did not run a retry before its run_after (the task was ACCEPTED until due).
    starts = [record.time for record in log if record.event == "task-started"]
    assert all(start > retry.time for retry, start in zip(retried, starts[1:], strict=True))
