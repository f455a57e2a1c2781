"""A task's whole life through the tracker: enqueue, claim, start, finish, read back."""

import pytest

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance


@pytest.mark.django_db
def test_task_goes_through_its_statuses_and_logs_each(enqueue):
    task_id = enqueue("job-1", {"a": 1}, message="queued")
    assert tracker.get_task_status(task_id) == (Status.ACCEPTED, "ACCEPTED")

    assert tracker.dequeue_task("server-1") == [task_id]
    assert tracker.get_task_status(task_id) == (Status.SCHEDULED, "SCHEDULED")

    assert tracker.start_task(task_id, server_id="server-1") == {"a": 1}
    tracker.stop_task_success(task_id, "done", attempt=1)

    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.attempts, task.server_id) == (Status.FINISHED, 1, "server-1")
    assert task.received_at <= task.started_at <= task.finished_at
    log = tracker.get_task_log("test.noop", "job-1")
    assert [(entry.status.status_name, entry.message) for entry in log] == [
        ("ACCEPTED", "queued"),
        ("SCHEDULED", ""),
        ("RUNNING", ""),
        ("FINISHED", "done"),
    ]
    assert list(LogRecord.objects.values_list("event", flat=True).order_by("id")) == [
        "task-sent",
        "task-received",
        "task-started",
        "task-succeeded",
    ]
