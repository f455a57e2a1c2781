"""The task admin's actions: each goes through the tracker, checks permissions, and reports."""

import signal

import pytest

from atp import tracker
from atp.admin.actions import retry_identifier
from atp.models import LogRecord, Status, TaskInstance
from tests.support.admin_fixtures import TASKS, action, messages_of
from tests.support.factories import TaskInstanceFactory

pytestmark = pytest.mark.django_db


def status_of(task_id):
    return TaskInstance.objects.get(pk=task_id).status


def test_reenqueue_puts_a_running_task_back_with_a_retried_event(superuser_client, running):
    task_id, _ = running("busy")
    response = action(superuser_client, "reenqueue", task_id)
    assert status_of(task_id) == Status.ACCEPTED
    record = LogRecord.objects.filter(instance_id=task_id).last()
    assert record.event == "task-retried" and "by root in the admin" in record.message
    assert messages_of(response) == ["Re-enqueued 1 task(s)."]


def test_reenqueue_of_an_ended_task_creates_a_new_task(superuser_client, running):
    task_id, attempt = running("report", {"year": 2024})
    tracker.stop_task_failure(task_id, "boom", attempt=attempt)
    response = action(superuser_client, "reenqueue", task_id)
    assert status_of(task_id) == Status.FAILED  # an ended task never changes
    copy = TaskInstance.objects.get(identifier="report-retry-1")
    assert (copy.status, copy.input, copy.type_id) == (
        Status.ACCEPTED,
        {"year": 2024},
        copy.type_id,
    )
    assert copy.parent_id is None
    (message,) = messages_of(response)
    assert "a new task report-retry-1" in message and f"id {copy.pk}" in message
    # Re-running the copy (or the original again) takes the next free number.
    tracker.revoke_task(copy.pk)
    action(superuser_client, "reenqueue", copy.pk)
    assert TaskInstance.objects.filter(identifier="report-retry-2").exists()


def test_retry_identifier_stays_within_64_characters(task_type):
    task = TaskInstanceFactory(type=task_type, identifier="x" * 64, status=Status.FAILED)
    identifier = retry_identifier(task)
    assert len(identifier) == 64 and identifier.endswith("-retry-1")


def test_reenqueue_skips_waiting_tasks_and_says_why(superuser_client, enqueue, running):
    busy, _ = running("busy")  # claimed first: a later waiting task would be claimed instead
    waiting = enqueue("in-queue")
    response = action(superuser_client, "reenqueue", waiting, busy)
    (message,) = messages_of(response)
    assert message.startswith("Re-enqueued 1 task(s).")
    assert "Skipped 1: 1 already waiting in the queue" in message and "in-queue" in message


def test_reenqueue_of_an_ended_task_respects_the_queue_limit(superuser_client, running):
    task_id, attempt = running("full")
    tracker.stop_task_failure(task_id, "boom", attempt=attempt)
    tracker.register_task_type("test.noop", "tests.support.handlers.noop", max_queue_size=1)
    tracker.enqueue_task("test.noop", "filler")
    (message,) = messages_of(action(superuser_client, "reenqueue", task_id))
    assert "Re-enqueued 0 task(s)" in message and "the queue is full" in message
    assert not TaskInstance.objects.filter(identifier="full-retry-1").exists()


def test_revoke_revokes_what_has_not_ended(superuser_client, enqueue, running):
    ended, attempt = running("ended")
    tracker.stop_task_success(ended, attempt=attempt)
    waiting = enqueue("waiting")
    (message,) = messages_of(action(superuser_client, "revoke", waiting, ended))
    assert status_of(waiting) == Status.REVOKED and status_of(ended) == Status.FINISHED
    assert message.startswith("Revoked 1 task(s).") and "1 already ended" in message
    assert LogRecord.objects.filter(instance_id=waiting, event="task-revoked").exists()


def test_revoke_terminate_asks_the_daemon_to_kill_a_running_handler(
    superuser_client, enqueue, running
):
    busy, _ = running("busy")
    waiting = enqueue("waiting")
    action(superuser_client, "revoke_terminate", busy, waiting)
    task = TaskInstance.objects.get(pk=busy)
    # The owning daemon kills the handler and revokes the task; until then it runs.
    assert (task.status, task.kill_signal) == (Status.RUNNING, signal.SIGTERM)
    assert LogRecord.objects.filter(instance_id=busy, message__contains="Termination requested")
    assert status_of(waiting) == Status.REVOKED
    (message,) = messages_of(action(superuser_client, "revoke_terminate", busy))
    assert "termination already requested" in message


def test_abort_flags_running_tasks_and_revokes_waiting_ones(superuser_client, enqueue, running):
    busy, _ = running("busy")
    waiting = enqueue("waiting")
    (message,) = messages_of(action(superuser_client, "abort", busy, waiting))
    task = TaskInstance.objects.get(pk=busy)
    assert task.status == Status.RUNNING and task.abort_requested_at is not None
    assert status_of(waiting) == Status.REVOKED
    assert message == "Aborted 2 task(s)."
    (again,) = messages_of(action(superuser_client, "abort", busy))
    assert "abort already requested" in again


def test_delete_goes_through_the_confirmation_and_the_tracker(superuser_client, running):
    task_id, _ = running("doomed")
    confirm = action(superuser_client, "delete_selected", task_id, follow=False)
    assert confirm.status_code == 200 and "Are you sure" in confirm.content.decode()
    assert TaskInstance.objects.filter(pk=task_id).exists()
    action(superuser_client, "delete_selected", task_id, post="yes")
    assert not TaskInstance.objects.filter(pk=task_id).exists()
    assert not LogRecord.objects.filter(instance_id=task_id).exists()


@pytest.mark.parametrize("name", ["reenqueue", "revoke", "revoke_terminate", "abort"])
def test_viewer_cannot_run_actions(viewer_client, running, name):
    task_id, _ = running("busy")
    response = action(viewer_client, name, task_id, follow=False)
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.kill_signal, task.abort_requested_at) == (Status.RUNNING, None, None)
    assert response.status_code in (200, 302, 403)


def test_viewer_cannot_delete(viewer_client, running):
    task_id, _ = running("kept")
    action(viewer_client, "delete_selected", task_id, post="yes")
    assert TaskInstance.objects.filter(pk=task_id).exists()


def test_change_permission_does_not_grant_delete(changer_client, running):
    task_id, _ = running("kept")
    action(changer_client, "delete_selected", task_id, post="yes")
    assert TaskInstance.objects.filter(pk=task_id).exists()
    action(changer_client, "revoke", task_id)
    assert status_of(task_id) == Status.REVOKED


def test_anonymous_cannot_run_actions(anonymous_client, running):
    task_id, _ = running("busy")
    response = action(anonymous_client, "revoke", task_id, follow=False)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert status_of(task_id) == Status.RUNNING


def test_action_buttons_on_the_detail_page_post_to_the_list(superuser_client, running):
    task_id, _ = running("busy")
    page = superuser_client.get(f"{TASKS}{task_id}/change/").content.decode()
    assert 'name="action" value="revoke"' in page and f'value="{task_id}"' in page


def test_request_kill_and_abort_refuse_ended_tasks(running):
    task_id, attempt = running("done")
    tracker.stop_task_success(task_id, attempt=attempt)
    with pytest.raises(tracker.InvalidTransition):
        tracker.request_kill(task_id, signal.SIGTERM)
    with pytest.raises(tracker.InvalidTransition):
        tracker.request_abort(task_id)
