"""ATPBackend in one process: enqueue, the result mapping, the handler, the system checks.

The handler runs here by driving the tracker by hand (claim, start, run, finish); the
end-to-end runs through a real ``atpd`` are in tests/integration/test_backend.py.
"""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core import checks
from django.test import modify_settings, override_settings
from django.utils import timezone

from atp import django_tasks_handler, tracker
from atp.backends import HANDLER, ATPBackend, _exception_path, type_identifier
from atp.exceptions import InvalidInput, QueueFull, ReturnValueNotJSON, TaskRevoked
from atp.models import LogRecord, Status, TaskInstance, TaskType
from atp.tasks_compat import (
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    task_backends,
)
from atp.taskstatus import TaskStatus
from tests.support import task_functions
from tests.support.factories import TaskInstanceFactory

ADD = "tests.support.task_functions.add"


@pytest.fixture
def backend():
    return task_backends["default"]


def atp_task(result) -> TaskInstance:
    return TaskInstance.objects.select_related("type").get(uuid=result.id)


def run_here(result, server_id="server-1"):
    """Claim, start and run the task of ``result`` in this process, as atpd would."""
    task_id = atp_task(result).pk
    assert tracker.dequeue_task(server_id) == [task_id]
    attempt = tracker.begin_attempt(task_id, server_id=server_id)
    value = django_tasks_handler.run(TaskStatus(task_id, attempt.number), attempt.input)
    tracker.stop_task_success_if_not_finished(task_id, attempt=attempt.number, result=value)
    return value


# --- enqueue ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_enqueue_creates_an_atp_task_of_a_type_named_after_the_function(backend):
    result = task_functions.add.using(priority=7).enqueue(2, b=3)

    assert isinstance(backend, ATPBackend)
    assert (result.status, result.args, result.kwargs) == (TaskResultStatus.READY, [2], {"b": 3})
    assert (result.attempts, result.worker_ids, result.errors) == (0, [], [])
    task = atp_task(result)
    assert (task.type.identifier, task.type.handler) == (ADD, HANDLER)
    assert (task.status, task.priority, task.queue) == (Status.ACCEPTED, 7, "default")
    assert task.input == {
        "task": ADD,
        "backend": "default",
        "takes_context": False,
        "run_after": None,
        "args": [2],
        "kwargs": {"b": 3},
    }
    assert result.enqueued_at == task.enqueued_at
    assert LogRecord.objects.get(instance=task).event == "task-sent"


@pytest.mark.django_db
def test_the_task_type_is_registered_once_and_kept_as_atp_changed_it():
    task_functions.add.enqueue(1, 2)
    tracker.register_task_type(ADD, HANDLER, timeout=42, maxrestart=5)
    task_functions.add.enqueue(3, 4)

    task_type = TaskType.objects.get()
    assert (task_type.timeout, task_type.maxrestart) == (42, 5)
    assert task_type.instances.count() == 2


@pytest.mark.django_db
@override_settings(
    TASKS={
        "default": {
            "BACKEND": "atp.backends.ATPBackend",
            "QUEUES": ["default", "other"],
            "OPTIONS": {"timeout": 60, "maxrestart": 0, "max_queue_size": 500},
        }
    }
)
def test_options_are_the_settings_of_new_task_types():
    task_functions.add.enqueue(1, 2)

    task_type = TaskType.objects.get(identifier=ADD)
    assert (task_type.timeout, task_type.maxrestart, task_type.max_queue_size) == (60, 0, 500)


@pytest.mark.django_db
def test_a_foreign_task_type_of_the_same_name_is_refused():
    tracker.register_task_type(ADD, "tests.support.handlers.noop")

    with pytest.raises(
        InvalidInput, match="already exists with handler 'tests.support.handlers.noop'"
    ):
        task_functions.add.enqueue(1, 2)
    assert not TaskInstance.objects.exists()


def test_long_module_paths_get_distinct_identifiers_of_64_characters():
    first = type_identifier("a" * 70 + ".one")
    second = type_identifier("a" * 70 + ".two")

    assert len(first) == len(second) == 64
    assert first != second
    assert type_identifier(ADD) == ADD


@pytest.mark.django_db
def test_arguments_must_be_json():
    with pytest.raises(InvalidInput, match="arguments of task tests.support.task_functions.add"):
        task_functions.add.enqueue(object(), 1)
    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        task_functions.add.enqueue(float("nan"), 1)
    assert not TaskInstance.objects.exists()


@pytest.mark.django_db
@override_settings(ATP={"MAX_QUEUE_SIZE": 2})
def test_enqueue_honours_the_queue_size_limit():
    task_functions.add.enqueue(1, 1)
    task_functions.add.enqueue(2, 2)

    with pytest.raises(QueueFull, match="its limit is 2"):
        task_functions.add.enqueue(3, 3)
    assert TaskInstance.objects.count() == 2


@pytest.mark.django_db
def test_queue_name_and_run_after_become_the_atp_queue_and_run_after(backend):
    later = timezone.now() + timedelta(hours=1)

    result = task_functions.on_other_queue.using(run_after=later).enqueue()

    task = atp_task(result)
    assert (task.queue, task.run_after) == ("other", later)
    assert backend.get_result(result.id).task.run_after == later


def test_a_queue_outside_queues_is_refused():
    with pytest.raises(Exception, match="Queue 'elsewhere' is not valid"):
        task_functions.add.using(queue_name="elsewhere")


# --- get_result -------------------------------------------------------------------------


@pytest.mark.django_db
def test_get_result_of_unknown_ids_raises_task_result_does_not_exist(backend):
    other = TaskInstanceFactory()  # an ATP task not made by the backend

    for result_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000", str(other.uuid)):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result_id)


@pytest.mark.django_db
def test_results_are_read_through_the_task_and_asynchronously():
    result = async_to_sync(task_functions.add.aenqueue)(1, 2)

    assert task_functions.add.get_result(result.id).args == [1, 2]
    assert async_to_sync(task_functions.add.aget_result)(result.id).id == result.id
    with pytest.raises(TaskResultMismatch):
        task_functions.fail.get_result(result.id)


@pytest.mark.django_db
def test_atp_statuses_map_to_result_statuses(backend):
    result = task_functions.add.enqueue(1, 2)
    task_id = atp_task(result).pk

    def status():
        result.refresh()
        return result.status

    assert status() == TaskResultStatus.READY
    tracker.dequeue_task("server-1")
    assert status() == TaskResultStatus.READY  # SCHEDULED: claimed, not started
    tracker.begin_attempt(task_id, server_id="server-1")
    assert status() == TaskResultStatus.RUNNING
    tracker.pause_task(task_id)
    assert status() == TaskResultStatus.RUNNING  # PAUSED
    tracker.resume_task(task_id)
    tracker.wait_for_subtasks(task_id)
    assert status() == TaskResultStatus.RUNNING  # WAITING
    tracker.stop_task_success(task_id)
    assert status() == TaskResultStatus.SUCCESSFUL
    assert result.return_value is None  # stopped by hand: no response stored
    assert (result.worker_ids, result.attempts) == (["server-1"], 1)


@pytest.mark.django_db
def test_a_revoked_task_is_failed_with_a_task_revoked_error(backend):
    result = task_functions.add.enqueue(1, 2)

    tracker.revoke_task(atp_task(result).pk, "cancelled by the operator")

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.finished_at is not None
    [error] = result.errors
    assert error.exception_class is TaskRevoked
    assert "cancelled by the operator" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("builtins.ValueError: boom", "builtins.ValueError"),
        ("myapp.errors.Oops: a: b", "myapp.errors.Oops"),
        ("TimeoutError", "builtins.TimeoutError"),
        ("Boom", "atp.exceptions.TaskFailed"),
        ("handler gave up: disk full", "atp.exceptions.TaskFailed"),
        ("", "atp.exceptions.TaskFailed"),
    ],
)
def test_failure_texts_map_to_exception_class_paths(text, path):
    assert _exception_path(text) == path


# --- the handler ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_handler_stores_the_return_value_as_a_json_response():
    result = task_functions.add.enqueue(2, 3)

    assert run_here(result) == 5

    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 5)
    assert tracker.get_task_response(ADD, result.id) == (b"5", "application/json")
    assert result.started_at == result.last_attempted_at <= result.finished_at


@pytest.mark.django_db
def test_the_handler_refuses_a_return_value_json_cannot_hold():
    result = task_functions.not_json.enqueue()

    with pytest.raises(
        ReturnValueNotJSON, match="return value of task tests.support.task_functions"
    ):
        run_here(result)


@pytest.mark.django_db
def test_the_handler_runs_coroutine_functions_and_passes_the_context():
    doubled = task_functions.async_double.enqueue(21)
    context = task_functions.whoami.enqueue()

    assert run_here(doubled) == 42
    assert run_here(context) == {"attempt": 1, "id": context.id}


@pytest.mark.django_db
def test_the_handler_refuses_input_that_is_not_a_django_task_call():
    tracker.register_task_type("raw", HANDLER)
    tracker.enqueue_task("raw", "t1", {"a": 1})
    [task_id] = tracker.dequeue_task("server-1")
    attempt = tracker.begin_attempt(task_id, server_id="server-1")

    with pytest.raises(InvalidInput, match="not a Django task call"):
        django_tasks_handler.run(TaskStatus(task_id, attempt.number), attempt.input)
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(str(TaskInstance.objects.get(pk=task_id).uuid))


# --- system checks ----------------------------------------------------------------------


def check_ids(**tasks_settings):
    params = {"BACKEND": "atp.backends.ATPBackend", **tasks_settings}
    return [message.id for message in ATPBackend("test", params).check()]


def test_a_correct_configuration_passes_the_checks():
    assert check_ids(QUEUES=["default", "mail"], OPTIONS={"timeout": 30, "rate_limit": "5/s"}) == []


def test_checks_report_invalid_queues_and_options():
    assert check_ids(QUEUES=["default", "", "q" * 65]) == ["atp.E102", "atp.E102"]
    assert check_ids(OPTIONS={"timeout": 0, "colour": "red", "queue": "x"}) == ["atp.E103"] * 3


def test_checks_report_atp_missing_from_installed_apps():
    with modify_settings(INSTALLED_APPS={"remove": "atp"}):
        assert check_ids() == ["atp.E101"]


@pytest.mark.django_db  # Django 6's model checks query the database
def test_backend_checks_run_with_djangos_system_checks():
    bad = {"default": {"BACKEND": "atp.backends.ATPBackend", "QUEUES": ["default", ""]}}
    with override_settings(TASKS=bad):
        ids = [message.id for message in checks.run_checks()]
    assert "atp.E102" in ids
