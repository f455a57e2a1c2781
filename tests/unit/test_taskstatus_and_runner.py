"""Handlers run by ``tests.support.helpers.run_task`` and what their ``TaskStatus`` lets them do."""

import json

import pytest

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance, TaskType
from atp.taskstatus import TaskStatus
from tests.support.helpers import events_of, run_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def claimed(db):
    """Register a type for a handler of tests/support/handlers.py, enqueue a task, claim it.

    ``claimed(name, input=None, **type_options)`` returns the task id.
    """

    def claimed(handler, input=None, **type_options):
        tracker.register_task_type(handler, f"tests.support.handlers.{handler}", **type_options)
        task_id = tracker.enqueue_task(handler, "job-1", input)
        assert tracker.dequeue_task("server-1") == [task_id]
        return task_id

    return claimed


def _task(task_id) -> TaskInstance:
    return TaskInstance.objects.get(pk=task_id)


def _last(task_id) -> LogRecord:
    return LogRecord.objects.filter(instance_id=task_id).latest("id")


def test_handler_that_returns_finishes_its_task(claimed):
    task_id = claimed("echo", {"a": 1})

    run_task(task_id, "server-1")

    task = _task(task_id)
    assert (task.status, task.attempts) == (Status.FINISHED, 1)
    assert events_of(task_id) == ["task-sent", "task-received", "task-started", "task-succeeded"]
    succeeded = _last(task_id).fields
    assert succeeded["result"] == repr({"a": 1})
    assert succeeded["runtime"] >= 0
    assert tracker.get_task_response("echo", "job-1") == (b"{'a': 1}", "text/plain")


def test_handler_that_raises_fails_its_task_with_the_traceback(claimed):
    task_id = claimed("fail", {"a": 1})

    run_task(task_id, "server-1")

    assert _task(task_id).status == Status.FAILED
    record = _last(task_id)
    text = "handler failed on purpose: {'a': 1}"
    assert (record.event, record.message) == ("task-failed", text)
    assert record.fields["exception"] == f"builtins.RuntimeError: {text}"
    traceback = record.fields["traceback"]
    assert traceback.startswith("Traceback (most recent call last)")
    assert "tests/support/handlers.py" in traceback and "in fail" in traceback
    assert traceback.rstrip().endswith(f"RuntimeError: {text}")


def test_exception_without_text_is_logged_by_its_class_name(claimed):
    task_id = claimed("fail_without_message")

    run_task(task_id, "server-1")

    record = _last(task_id)
    assert (record.status, record.message) == (Status.FAILED, "ValueError")


def test_handler_that_no_longer_imports_fails_its_task(claimed):
    task_id = claimed("noop")
    # The handler was removed after its type was registered (a deploy without a migration).
    TaskType.objects.filter(identifier="noop").update(
        handler="tests.support.handlers.removed_since"
    )

    run_task(task_id, "server-1")

    assert _task(task_id).status == Status.FAILED
    assert "ImportError" in _last(task_id).fields["exception"]


def test_taskstatus_reports_the_tasks_info(claimed):
    task_id = claimed("introspect", ["x"], soft_time_limit=30)

    run_task(task_id, "server-1")

    seen = json.loads(tracker.get_task_response("introspect", "job-1")[0])
    assert seen == {
        "info": ["introspect", "job-1", Status.RUNNING, "RUNNING"],
        "identifier": ["introspect", "job-1"],
        "status": [Status.RUNNING, "RUNNING"],
        "attempt": 1,
        "soft_time_limit": 30.0,
        "input": ["x"],
    }
    assert _last(task_id).fields["result"] == "'seen'"


def test_handler_that_ends_its_task_keeps_that_end(claimed):
    finished = claimed("succeed_early")
    run_task(finished, "server-1")

    record = _last(finished)
    assert (record.status, record.message) == (Status.FINISHED, "done early")
    assert events_of(finished).count("task-succeeded") == 1

    failed = claimed("fail_softly")
    run_task(failed, "server-1")

    assert _task(failed).status == Status.FAILED
    assert _last(failed).message == "gave up"
    assert "task-succeeded" not in events_of(failed)


def test_handler_that_pauses_and_resumes(claimed):
    task_id = claimed("pause_and_resume")

    run_task(task_id, "server-1")

    assert events_of(task_id)[2:] == [
        "task-started",
        "task-paused",
        "task-resumed",
        "task-succeeded",
    ]
    assert [entry.message for entry in tracker.get_task_log("pause_and_resume", "job-1")][3:5] == [
        "waiting for a lock",
        "got the lock",
    ]
    assert _last(task_id).fields["result"] == "1"


def test_handler_that_returns_while_paused_finishes(claimed):
    task_id = claimed("return_while_paused")

    run_task(task_id, "server-1")

    assert _task(task_id).status == Status.FINISHED
    assert events_of(task_id)[-2:] == ["task-paused", "task-succeeded"]


def test_handler_reports_progress(claimed):
    task_id = claimed("report_progress")

    run_task(task_id, "server-1")

    task = _task(task_id)
    assert task.status == Status.FINISHED
    assert task.progress == {"done": 3.0, "total": 3.0, "percent": 100.0, "message": "step 3"}
    progress = LogRecord.objects.filter(instance_id=task_id, event="task-progress").order_by("id")
    assert [record.message for record in progress] == ["step 1", "step 2", "step 3"]
    assert progress[0].fields["progress"]["percent"] == 33.33
    assert {record.status for record in progress} == {Status.RUNNING}


def test_task_waiting_for_subtasks_stays_waiting_after_its_handler(claimed):
    task_id = claimed("wait_for_children")

    run_task(task_id, "server-1")

    assert _task(task_id).status == Status.WAITING
    assert events_of(task_id)[-1] == "task-waiting"


@pytest.mark.parametrize("handler", ["lose_then_write", "lose_then_return", "lose_then_raise"])
def test_handler_that_lost_its_task_leaves_it_to_the_new_owner(claimed, handler):
    task_id = claimed(handler)

    run_task(task_id, "server-1")  # does not raise

    task = _task(task_id)
    assert (task.status, task.attempts, task.server_id) == (Status.RUNNING, 2, "server-2")
    assert task.progress is None
    assert events_of(task_id)[-1] == "task-started"  # nothing the old attempt did was logged


def test_run_task_claimed_by_another_daemon_does_not_start_it(claimed):
    task_id = claimed("noop")
    logs = LogRecord.objects.count()

    run_task(task_id, "server-2")

    task = _task(task_id)
    assert (task.status, task.server_id, task.attempts) == (Status.SCHEDULED, "server-1", 0)
    assert LogRecord.objects.count() == logs


def test_run_task_of_a_task_not_claimed_or_gone_does_nothing(claimed):
    task_id = claimed("noop")
    tracker.revoke_task(task_id, "cancelled")

    run_task(task_id, "server-1")
    run_task(999_999, "server-1")

    assert _task(task_id).status == Status.REVOKED


def test_taskstatus_names_the_status_codes_and_its_task():
    assert (TaskStatus.ACCEPTED, TaskStatus.RUNNING, TaskStatus.FINISHED) == (1, 3, 5)
    assert [getattr(TaskStatus, status.label) for status in Status] == list(Status)
    assert repr(TaskStatus(7, 2)) == "TaskStatus(task_id=7, attempt=2)"


def test_taskstatus_without_attempt_writes_unfenced(running):
    task_id, _ = running("job-1")
    status = TaskStatus(task_id)

    assert status.set_progress(2, 4) == {"done": 2.0, "total": 4.0, "percent": 50.0, "message": ""}
    status.heartbeat()
    status.store_response("<r/>")
    status.set_paused()
    status.set_running()
    status.set_failure("stopped by hand")

    assert status.get_status() == (Status.FAILED, "FAILED")
    assert tracker.get_task_response("test.noop", "job-1") == (b"<r/>", "text/xml")
