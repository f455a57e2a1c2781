"""atp.control without a daemon: what each command writes, and the rate limit at claim time."""

import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from atp import control, tracker
from atp.exceptions import InvalidInput, QueueEmpty, TaskNotFound, UnknownTaskType
from atp.models import LogRecord, Status, TaskInstance, TaskType
from atp.taskstatus import TaskStatus
from tests.support.helpers import run_task

pytestmark = pytest.mark.django_db


def run_next(server_id="server-1"):
    """Claim the next task and run it in this process, as a daemon would."""
    [task_id] = tracker.dequeue_task(server_id)
    run_task(task_id, server_id)
    return task_id


def status_of(task_id):
    return TaskInstance.objects.get(pk=task_id).status


@pytest.fixture
def echo(db):
    return tracker.register_task_type("test.echo", "tests.support.handlers.echo")


# --- enqueue and results ------------------------------------------------------------------


def test_async_apply_and_send_task_return_a_pending_result(echo):
    result = control.async_apply("test.echo", {"a": 1}, priority=3)
    task = TaskInstance.objects.get(pk=result.id)
    assert (result.uuid, result.state, result.status) == (str(task.uuid), "PENDING", "ACCEPTED")
    assert not result.ready and task.priority == 3 and task.input == {"a": 1}
    sent = control.send_task("test.echo", [1, 2], identifier="by-name")
    assert TaskInstance.objects.get(pk=sent.id).identifier == "by-name"


def test_send_task_needs_a_registered_type_name(db):
    with pytest.raises(UnknownTaskType):
        control.send_task("no.such.type")
    with pytest.raises(InvalidInput):
        control.send_task(42)


def test_get_result_returns_at_once_and_does_not_wait_without_timeout(echo):
    pending = control.async_apply("test.echo", {"a": 1})
    assert control.get_result(pending.id) == pending
    assert control.get_result(pending.uuid, timeout=0.1).state == "PENDING"
    assert control.get_result(pending.uuid).as_flower() == {
        "task-id": pending.uuid,
        "state": "PENDING",
    }


def test_get_result_gives_the_handlers_return_value(echo):
    pending = control.async_apply("test.echo", {"a": [1, 2], "b": None})
    run_next()
    result = control.get_result(pending.id)
    assert result.ready and result.successful and result.state == "SUCCESS"
    assert result.result == {"a": [1, 2], "b": None}
    assert result.as_flower() == {
        "task-id": pending.uuid,
        "state": "SUCCESS",
        "result": {"a": [1, 2], "b": None},
    }


def test_get_result_of_a_failed_task_has_exception_and_traceback(db):
    tracker.register_task_type("test.fail", "tests.support.handlers.fail")
    pending = control.async_apply("test.fail", "boom")
    run_next()
    result = control.get_result(pending.uuid)
    assert (result.state, result.successful) == ("FAILURE", False)
    assert "handler failed on purpose" in result.exception
    assert "RuntimeError" in result.traceback
    flower = result.as_flower()
    assert flower["result"] == result.exception and "RuntimeError" in flower["traceback"]


@pytest.mark.parametrize(
    "text, value",
    [
        ("{'a': 1}", {"a": 1}),
        ("[1, 'x', None, True]", [1, "x", None, True]),
        ("'[1, 2]'", "[1, 2]"),  # a string that looks like a list stays a string
        ("None", None),
        ("<object object at 0x7f>", "<object object at 0x7f>"),
        ("{1, 2}", "{1, 2}"),  # a set is no JSON value: keep the repr
        ("b'raw'", "b'raw'"),
        ("__import__('os')", "__import__('os')"),  # never evaluated
    ],
)
def test_result_reprs_become_values_only_when_they_are_json_literals(text, value):
    assert control._value(text) == value


def test_get_result_of_unknown_task_raises(db):
    for key in (10**9, "1f0e7c52-0000-4000-8000-000000000000", "junk"):
        with pytest.raises(TaskNotFound):
            control.get_result(key)


def test_apply_returns_a_not_ready_result_when_nothing_runs_the_task(echo):
    result = control.apply("test.echo", {"a": 1}, timeout=0.2)
    assert not result.ready and result.state == "PENDING"
    with pytest.raises(InvalidInput):
        control.apply("test.echo", {"a": 1}, timeout=-1)


# --- abort --------------------------------------------------------------------------------


def test_abort_of_a_waiting_task_revokes_it_at_once(enqueue):
    task_id = enqueue()
    assert control.abort(task_id) is True
    assert status_of(task_id) == Status.REVOKED
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1")


def test_abort_of_a_running_task_asks_its_handler_to_stop(running):
    task_id, attempt = running()
    status = TaskStatus(task_id, attempt)
    assert not status.is_aborted()
    assert control.abort(str(TaskInstance.objects.get(pk=task_id).uuid)) is True
    task = TaskInstance.objects.get(pk=task_id)
    assert task.status == Status.RUNNING and task.abort_requested_at is not None
    assert status.is_aborted()


def test_abort_of_an_ended_task_does_nothing(running):
    task_id, attempt = running()
    tracker.stop_task_success(task_id, attempt=attempt)
    assert control.abort(task_id) is False
    assert TaskInstance.objects.get(pk=task_id).abort_requested_at is None


def aborts_itself(task_status, input):
    """Handler: request its own abort, notice it, stop cooperatively."""
    control.abort(task_status.task_id)
    assert task_status.is_aborted()
    return "stopped early"


def aborts_then_raises(task_status, input):
    control.abort(task_status.task_id)
    raise RuntimeError("stopping")


@pytest.mark.parametrize("handler", ["aborts_itself", "aborts_then_raises"])
def test_runner_ends_an_aborted_task_revoked(db, handler):
    tracker.register_task_type("test.abort", f"tests.unit.test_control.{handler}")
    task_id = tracker.enqueue_task("test.abort")
    run_next()
    assert status_of(task_id) == Status.REVOKED
    last = LogRecord.objects.filter(instance_id=task_id).latest("id")
    assert last.event == "task-revoked" and last.message.startswith("Aborted on request")


# --- revoke ---------------------------------------------------------------------------------


def test_revoke_of_a_waiting_task_means_it_never_runs(enqueue):
    task_id = enqueue()
    assert control.revoke(task_id) is True
    assert status_of(task_id) == Status.REVOKED
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1")
    record = LogRecord.objects.filter(instance_id=task_id).latest("id")
    assert record.fields["terminated"] is False


def test_revoke_of_a_claimed_task_stops_it_before_it_starts(enqueue):
    task_id = enqueue()
    tracker.dequeue_task("server-1")
    assert control.revoke(task_id, terminate=True) is True
    run_task(task_id, "server-1")  # the daemon's start is refused
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.attempts, task.kill_signal) == (Status.REVOKED, 0, None)


def test_revoke_of_a_running_task_without_terminate_revokes_it_now(running):
    task_id, attempt = running()
    assert control.revoke(task_id) is True
    assert status_of(task_id) == Status.REVOKED
    assert TaskStatus(task_id, attempt).is_aborted()
    # The handler's late success is refused; the task stays REVOKED.
    assert not tracker.stop_task_success_if_not_finished(task_id, attempt=attempt)
    assert status_of(task_id) == Status.REVOKED


@pytest.mark.parametrize(
    "name, number",
    [
        ("SIGTERM", signal.SIGTERM),
        ("KILL", signal.SIGKILL),
        ("sigint", signal.SIGINT),
        (9, 9),
        ("15", 15),
    ],
)
def test_revoke_with_terminate_asks_the_daemon_to_send_the_signal(running, name, number):
    task_id, _ = running()
    assert control.revoke(task_id, terminate=True, signal=name) is True
    task = TaskInstance.objects.get(pk=task_id)
    # The daemon owning the task kills its handler and ends it REVOKED; until then it runs.
    assert (task.status, task.kill_signal) == (Status.RUNNING, number)


@pytest.mark.parametrize("bad", ["SIGNOPE", "", 0, 100000, None, 1.5])
def test_revoke_refuses_an_unknown_signal_and_changes_nothing(enqueue, bad):
    task_id = enqueue()
    with pytest.raises(InvalidInput):
        control.revoke(task_id, terminate=True, signal=bad)
    assert status_of(task_id) == Status.ACCEPTED


def test_revoke_of_an_ended_or_unknown_task(running):
    task_id, attempt = running()
    tracker.stop_task_success(task_id, attempt=attempt)
    assert control.revoke(task_id) is False
    with pytest.raises(TaskNotFound):
        control.revoke(10**9)


# --- rate limits and timeouts ------------------------------------------------------------------


def test_rate_limit_is_validated_and_stored(task_type):
    assert control.rate_limit("test.noop", "10/m") == "10/m"
    assert TaskType.objects.get(pk=task_type.pk).rate_limit == "10/m"
    assert control.rate_limit(task_type, "") == ""
    assert TaskType.objects.get(pk=task_type.pk).rate_limit == ""
    # As in Celery: a bare number is per second, and 0 means no limit.
    assert control.rate_limit("test.noop", "5") == "5/s"
    assert control.rate_limit("test.noop", 7) == "7/s"
    assert control.rate_limit("test.noop", "0/m") == ""
    for bad in ("x/m", "10/d", "-1/s", 1.5):
        with pytest.raises(InvalidInput):
            control.rate_limit("test.noop", bad)
    with pytest.raises(UnknownTaskType):
        control.rate_limit("no.such.type", "1/s")


def test_set_timeouts_is_validated_and_stored(task_type):
    assert control.set_timeouts("test.noop", soft=30, hard=60) == (30.0, 60.0)
    stored = TaskType.objects.get(pk=task_type.pk)
    assert (stored.soft_time_limit, stored.hard_time_limit) == (30.0, 60.0)
    assert control.set_timeouts("test.noop", hard=5) == (None, 5.0)
    for soft, hard in ((60, 30), (-1, None), (None, 0), ("x", None)):
        with pytest.raises(InvalidInput):
            control.set_timeouts("test.noop", soft=soft, hard=hard)
    stored = TaskType.objects.get(pk=task_type.pk)
    assert (stored.soft_time_limit, stored.hard_time_limit) == (None, 5.0)


def test_rate_limit_caps_claims_across_daemons_in_the_window(task_type, enqueue):
    control.rate_limit("test.noop", "2/m")
    ids = [enqueue() for _ in range(4)]
    assert tracker.dequeue_task("server-1") == [ids[0]]
    assert tracker.dequeue_task("server-2") == [ids[1]]
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-3")
    # Once the window has moved past the first claims, two more may go.
    TaskInstance.objects.filter(pk__in=ids[:2]).update(
        received_at=timezone.now() - timedelta(seconds=61)
    )
    assert tracker.dequeue_task("server-3", limit=5) == ids[2:]


def test_a_full_rate_limited_type_does_not_block_other_types(task_type, enqueue):
    tracker.register_task_type("test.other", "tests.support.handlers.noop")
    control.rate_limit("test.noop", "1/h")
    limited = [enqueue(priority=10) for _ in range(3)]
    other = enqueue(type="test.other")
    assert tracker.dequeue_task("server-1", limit=3) == [limited[0], other]
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1")
    assert TaskInstance.objects.filter(pk__in=limited[1:], status=Status.ACCEPTED).count() == 2


def test_malformed_rate_in_the_database_is_ignored_not_fatal(task_type, enqueue):
    TaskType.objects.filter(pk=task_type.pk).update(rate_limit="lots")
    ids = [enqueue() for _ in range(2)]
    assert tracker.dequeue_task("server-1", limit=2) == ids


@pytest.mark.parametrize(
    "name", ["SIGSTOP", "SIGTSTP", "SIGCONT", "SIGTTIN", "SIGTTOU", "SIGCHLD", "WINCH", "19"]
)
def test_revoke_refuses_signals_that_do_not_terminate(running, name):
    """15.6: a stopped handler would hold its slot for ever; an ignored signal does nothing."""
    task_id, _ = running()
    with pytest.raises(InvalidInput, match="does not terminate"):
        control.revoke(task_id, terminate=True, signal=name)
    task = TaskInstance.objects.get(pk=task_id)
    assert task.status == Status.RUNNING and task.kill_signal is None


def test_a_terminate_request_outlives_no_attempt(running):
    """15.6: the attempt that was asked to terminate ends REVOKED, even when its daemon was
    lost before acting, and no later attempt inherits the request."""
    task_id, attempt = running()
    control.revoke(task_id, terminate=True)
    assert tracker.restart_or_fail(task_id, "daemon lost", attempt=attempt) == "revoked"
    task = TaskInstance.objects.get(pk=task_id)
    assert task.status == Status.REVOKED
    assert task.log.get(event="task-revoked").fields["terminated"] is True


def test_a_terminated_handler_that_reports_success_ends_revoked(running):
    task_id, attempt = running()
    control.revoke(task_id, terminate=True, signal="SIGUSR1")
    tracker.finish_tasks([(task_id, attempt, "'fine'")])
    assert TaskInstance.objects.get(pk=task_id).status == Status.REVOKED
