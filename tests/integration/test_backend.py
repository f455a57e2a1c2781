"""Django's tasks framework on ATP, end to end: enqueue here, run in a real ``atpd`` process.

Runs on SQLite and on PostgreSQL alike (the daemon uses the test database; see
tests/support/daemon_settings.py). Only atpd's command line is relied on.
"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from atp import query, tracker
from atp.backends import HANDLER
from atp.exceptions import ReturnValueNotJSON, TaskRevoked
from atp.models import LogRecord, Status, TaskInstance
from atp.tasks_compat import TaskResultStatus, task_backends
from tests.support import task_functions
from tests.support.atpd_process import kill_atpd, run_atpd, start_atpd, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def atp_task(result) -> TaskInstance:
    return TaskInstance.objects.select_related("type").get(uuid=result.id)


def events_of(result) -> list[str]:
    return list(
        LogRecord.objects.filter(instance__uuid=result.id)
        .order_by("id")
        .values_list("event", flat=True)
    )


def test_a_task_succeeds_with_its_return_value_and_shows_in_atp():
    result = task_functions.add.enqueue(2, 3)

    run_atpd("--burst", "--server-id", "atpd-1")

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert (result.worker_ids, result.attempts, result.errors) == (["atpd-1"], 1, [])
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    # The same task through ATP's own API: status, response, history and events.
    task = atp_task(result)
    assert tracker.get_task_status(task.pk) == (Status.FINISHED, "FINISHED")
    assert tracker.get_task_response("tests.support.task_functions.add", task.identifier) == (
        b"5",
        "application/json",
    )
    assert events_of(result) == ["task-sent", "task-received", "task-started", "task-succeeded"]
    assert LogRecord.objects.get(instance=task, event="task-succeeded").fields["result"] == "5"
    # ... and through the query API and the admin, like any other task.
    shown = query.as_dict(query.get_task_by_id(str(result.id)))
    assert (shown["name"], shown["state"], shown["worker"]) == (
        "tests.support.task_functions.add",
        "SUCCESS",
        "atpd-1",
    )
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.org", "pw"))
    page = admin.get(f"/admin/atp/taskinstance/{task.pk}/change/")
    assert page.status_code == 200 and task.identifier in page.content.decode()


def test_an_async_task_function_runs():
    result = task_functions.async_double.enqueue(21)

    run_atpd("--burst")

    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 42)


def test_an_exception_fails_the_task_with_its_class_path_and_traceback():
    failed = task_functions.fail.enqueue("broken on purpose")
    not_json = task_functions.not_json.enqueue()

    run_atpd("--burst")

    failed.refresh()
    assert failed.status == TaskResultStatus.FAILED
    [error] = failed.errors
    assert error.exception_class is ValueError
    assert "broken on purpose" in error.traceback
    assert "in fail\n    raise ValueError(message)" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018
    assert tracker.get_task_status(atp_task(failed).pk).status_name == "FAILED"

    not_json.refresh()
    assert not_json.status == TaskResultStatus.FAILED
    [error] = not_json.errors
    assert error.exception_class is ReturnValueNotJSON
    assert "return value of task tests.support.task_functions.not_json" in error.traceback


def test_tasks_run_in_priority_order():
    low = task_functions.add.using(priority=-5).enqueue(1, 1)
    high = task_functions.add.using(priority=50).enqueue(2, 2)
    middle = task_functions.add.using(priority=10).enqueue(3, 3)

    run_atpd("--burst", "--max-tasks", "1")

    for result in (low, high, middle):
        result.refresh()
    assert [r.status for r in (high, middle, low)] == [
        TaskResultStatus.SUCCESSFUL,
        TaskResultStatus.READY,
        TaskResultStatus.READY,
    ]

    run_atpd("--burst")

    starts = {
        record.instance.uuid: record.pk
        for record in LogRecord.objects.filter(event="task-started").select_related("instance")
    }
    assert starts[atp_task(middle).uuid] < starts[atp_task(low).uuid]
    assert atp_task(high).priority == 50


def test_run_after_is_respected():
    later = timezone.now() + timedelta(hours=1)
    deferred = task_functions.add.using(run_after=later).enqueue(1, 2)
    now = task_functions.add.enqueue(3, 4)

    run_atpd("--burst")

    deferred.refresh()
    now.refresh()
    assert (now.status, deferred.status) == (TaskResultStatus.SUCCESSFUL, TaskResultStatus.READY)

    # Once due (moved here rather than waited for), the next daemon runs it.
    TaskInstance.objects.filter(uuid=deferred.id).update(run_after=timezone.now())
    run_atpd("--burst")

    deferred.refresh()
    assert (deferred.status, deferred.return_value) == (TaskResultStatus.SUCCESSFUL, 3)
    assert task_backends["default"].get_result(deferred.id).task.run_after == later


def test_queues_route_tasks_to_the_daemons_that_serve_them():
    other = task_functions.on_other_queue.enqueue()

    run_atpd("--burst", "--queues", "default")
    other.refresh()
    assert other.status == TaskResultStatus.READY

    run_atpd("--burst", "--queues", "other")
    other.refresh()
    assert (other.status, other.return_value) == (TaskResultStatus.SUCCESSFUL, "other")


def test_takes_context_sees_the_attempt_and_the_result_id():
    result = task_functions.whoami.enqueue()

    run_atpd("--burst")

    result.refresh()
    assert result.return_value == {"attempt": 1, "id": result.id}


def test_a_task_revoked_through_atp_is_failed_and_never_runs():
    result = task_functions.add.enqueue(1, 2)

    tracker.revoke_task(atp_task(result).pk, "cancelled by the operator")
    run_atpd("--burst")

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [error.exception_class for error in result.errors] == [TaskRevoked]
    assert (result.worker_ids, result.started_at) == ([], None)
    assert events_of(result) == ["task-sent", "task-revoked"]


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
def test_a_task_restarted_after_its_daemon_was_killed_counts_the_extra_attempt():
    result = task_functions.slow_first_attempt.enqueue(600)
    identifier = "tests.support.task_functions.slow_first_attempt"

    daemon = start_atpd("--burst", "--server-id", "atpd-killed")
    try:
        wait_until(lambda: _status(result) == TaskResultStatus.RUNNING, "the first attempt")
    finally:
        kill_atpd(daemon)

    # The task stays RUNNING under a dead daemon until the zombie sweep notices. A short
    # type timeout, set only now so no live daemon could sweep it early, makes that quick.
    tracker.register_task_type(identifier, HANDLER, timeout=0.5)
    wait_until(
        lambda: any(entry.action == "reenqueued" for entry in tracker.reenqueue_zombie_tasks()),
        "the zombie sweep to re-enqueue the task",
    )
    tracker.register_task_type(identifier, HANDLER)
    assert _status(result) == TaskResultStatus.READY

    run_atpd("--burst", "--server-id", "atpd-2")

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 2  # the context's attempt number on the second run
    assert (result.attempts, result.worker_ids) == (2, ["atpd-killed", "atpd-2"])
    assert result.started_at < result.last_attempted_at
    assert atp_task(result).attempts == 2
    assert "task-retried" in events_of(result)


def _status(result):
    result.refresh()
    return result.status
