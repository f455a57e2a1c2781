"""One stop decision (``tracker.cancel_task``, ``abort_task``) for control, admin and remote."""

import signal

import pytest

from atp import control, tracker
from atp.daemon import remote
from atp.models import LogRecord, Status, TaskInstance
from tests.support.admin_fixtures import action
from tests.support.factories import TaskInstanceFactory

pytestmark = pytest.mark.django_db

Stopped = tracker.Stopped
NOT_STARTED = [Status.ACCEPTED, Status.SCHEDULED, Status.WAITING]
HANDLER_RUNS = [Status.RUNNING, Status.PAUSED]
ENDED = [Status.FINISHED, Status.FAILED, Status.REVOKED]


def reloaded(task):
    return TaskInstance.objects.get(pk=task.pk)


@pytest.mark.parametrize("status", NOT_STARTED + HANDLER_RUNS)
def test_cancel_without_terminate_revokes_now(status):
    task = TaskInstanceFactory(status=status)
    assert tracker.cancel_task(task.pk, "by ops") == Stopped.REVOKED
    task = reloaded(task)
    assert (task.status, task.kill_signal) == (Status.REVOKED, None)
    assert task.log.filter(event="task-revoked", message="Revoked by ops.").exists()


@pytest.mark.parametrize("status", NOT_STARTED)
def test_cancel_with_terminate_revokes_a_task_with_no_handler_now(status):
    task = TaskInstanceFactory(status=status)
    assert tracker.cancel_task(task.pk, terminate=True) == Stopped.REVOKED
    assert reloaded(task).status == Status.REVOKED


@pytest.mark.parametrize("status", HANDLER_RUNS)
def test_cancel_with_terminate_asks_the_daemon_to_kill_once_per_signal(status):
    task = TaskInstanceFactory(status=status)
    assert tracker.cancel_task(task.pk, terminate=True) == Stopped.KILL_REQUESTED
    assert tracker.cancel_task(task.pk, terminate=True) == Stopped.KILL_PENDING
    assert (reloaded(task).status, reloaded(task).kill_signal) == (status, signal.SIGTERM)
    # A different signal replaces the request: SIGKILL after a SIGTERM the handler ignored.
    kill = signal.SIGKILL
    assert tracker.cancel_task(task.pk, terminate=True, signum=kill) == Stopped.KILL_REQUESTED
    assert reloaded(task).kill_signal == signal.SIGKILL
    assert LogRecord.objects.filter(instance=task, message__startswith="Termination").count() == 2


@pytest.mark.parametrize("status", ENDED)
def test_an_ended_task_is_left_alone(status):
    task = TaskInstanceFactory(status=status)
    before = LogRecord.objects.count()
    assert tracker.cancel_task(task.pk, terminate=True) == Stopped.ENDED
    assert tracker.abort_task(task.pk) == Stopped.ENDED
    assert (reloaded(task).status, LogRecord.objects.count()) == (status, before)


@pytest.mark.parametrize("status", NOT_STARTED)
def test_abort_revokes_a_task_whose_handler_does_not_run(status):
    task = TaskInstanceFactory(status=status)
    assert tracker.abort_task(task.pk, "by ops") == Stopped.REVOKED
    assert reloaded(task).status == Status.REVOKED
    assert task.log.filter(message="Aborted before it ran by ops.").exists()


@pytest.mark.parametrize("status", HANDLER_RUNS)
def test_abort_asks_a_running_handler_once(status):
    task = TaskInstanceFactory(status=status)
    assert tracker.abort_task(task.pk) == Stopped.ABORT_REQUESTED
    asked_at = reloaded(task).abort_requested_at
    assert tracker.abort_task(task.pk) == Stopped.ABORT_PENDING
    assert reloaded(task).status == status and reloaded(task).abort_requested_at == asked_at


def test_a_bad_signal_is_refused_only_when_it_would_be_sent():
    task = TaskInstanceFactory(status=Status.RUNNING)
    with pytest.raises(tracker.InvalidInput, match="signum"):
        tracker.cancel_task(task.pk, terminate=True, signum=0)
    assert reloaded(task).kill_signal is None
    assert tracker.cancel_task(task.pk, signum=None) == Stopped.REVOKED


# --- the three callers decide alike ---------------------------------------------------------


class _Node:
    hostname, server_id = "celery@node-2", "server-2"


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.WAITING])
def test_abort_from_python_and_from_the_admin_revoke_a_task_not_started(status, superuser_client):
    # The admin used to flag these for abort (so a WAITING parent ran on until its
    # subtasks ended) while control.abort revoked them: now both revoke.
    by_control, by_admin = TaskInstanceFactory(status=status), TaskInstanceFactory(status=status)
    control.abort(by_control.pk)
    action(superuser_client, "abort", by_admin.pk)
    assert reloaded(by_control).status == reloaded(by_admin).status == Status.REVOKED


@pytest.mark.parametrize("caller", ["control", "admin", "remote"])
def test_revoke_without_terminate_revokes_a_running_task_for_every_caller(caller, superuser_client):
    task = TaskInstanceFactory(status=Status.RUNNING)
    if caller == "control":
        control.revoke(task.pk)
    elif caller == "admin":
        action(superuser_client, "revoke", task.pk)
    else:  # a daemon that does not own the task receives the broadcast
        remote.revoke(_Node(), str(task.uuid))
    assert reloaded(task).status == Status.REVOKED


@pytest.mark.parametrize("caller", ["control", "admin", "remote"])
def test_terminate_asks_the_owning_daemon_once_for_every_caller(caller, superuser_client):
    task = TaskInstanceFactory(status=Status.RUNNING)
    for _ in range(2):
        if caller == "control":
            control.revoke(task.pk, terminate=True)
        elif caller == "admin":
            action(superuser_client, "revoke_terminate", task.pk)
        else:
            remote.terminate(_Node(), "SIGTERM", str(task.uuid))
    task = reloaded(task)
    assert (task.status, task.kill_signal) == (Status.RUNNING, signal.SIGTERM)
    assert LogRecord.objects.filter(instance=task, message__startswith="Termination").count() == 1
