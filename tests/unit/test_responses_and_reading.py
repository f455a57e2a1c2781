"""Responses, the reading functions, deletion, and TaskNotFound for unknown task ids."""

import pytest

from atp import tracker
from atp.exceptions import InvalidInput, TaskNotFound, UnknownTaskType
from atp.models import LogRecord, Response, Status, TaskInstance
from tests.support.factories import LogRecordFactory, ResponseFactory, TaskInstanceFactory
from tests.support.helpers import ago, nothing_written

pytestmark = pytest.mark.django_db

UNKNOWN = 999_999


# --- responses --------------------------------------------------------------------------


def test_bytes_response_round_trips_with_the_default_mime_type(running):
    task_id, _ = running("job-1")
    tracker.set_task_response(task_id, b"\x00<ok/>\xff")
    assert tracker.get_task_response("test.noop", "job-1") == (b"\x00<ok/>\xff", "text/xml")


def test_text_response_is_stored_as_utf8(running):
    task_id, _ = running("job-1")
    tracker.set_task_response(task_id, "grüße ✓", "text/plain; charset=utf-8")

    data, mime_type = tracker.get_task_response("test.noop", "job-1")

    assert data == "grüße ✓".encode()
    assert isinstance(data, bytes)
    assert mime_type == "text/plain; charset=utf-8"
    assert Response.objects.get(instance_id=task_id).text == "grüße ✓"


def test_second_response_replaces_data_and_mime_type(running):
    """The seed's update path wrote a misspelt field and kept the old MIME type."""
    task_id, _ = running("job-1")
    tracker.set_task_response(task_id, b"<a/>", "text/xml")

    tracker.set_task_response(task_id, b'{"a": 1}', "application/json")

    assert tracker.get_task_response("test.noop", "job-1") == (b'{"a": 1}', "application/json")
    assert Response.objects.filter(instance_id=task_id).count() == 1
    stored = Response.objects.get(instance_id=task_id)
    assert stored.mime_type == "application/json"


@pytest.mark.parametrize(
    "response, mime_type, match",
    [
        (123, "text/plain", "must be bytes or str"),
        ({"a": 1}, "text/plain", "must be bytes or str"),
        (b"x", "plain", "type/subtype"),
        (b"x", None, "type/subtype"),
    ],
)
def test_bad_response_is_refused(running, response, mime_type, match):
    task_id, _ = running("job-1")
    with nothing_written(), pytest.raises(InvalidInput, match=match):
        tracker.set_task_response(task_id, response, mime_type)


def test_missing_response_raises_task_not_found(enqueue):
    enqueue("job-1")
    with pytest.raises(TaskNotFound, match="test.noop::job-1 has no response"):
        tracker.get_task_response("test.noop", "job-1")


def test_response_of_unknown_task_or_type(task_type):
    with pytest.raises(TaskNotFound, match="test.noop::nope"):
        tracker.get_task_response("test.noop", "nope")
    with pytest.raises(UnknownTaskType):
        tracker.get_task_response("nope", "job-1")


# --- reading ----------------------------------------------------------------------------


def test_get_task_info_identifier_and_status(enqueue):
    task_id = enqueue("job-1")
    tracker.dequeue_task("server-1")

    info = tracker.get_task_info(task_id)
    assert info == ("test.noop", "job-1", Status.SCHEDULED, "SCHEDULED")
    assert (info.type, info.identifier, info.status, info.status_name) == tuple(info)
    assert tracker.get_task_identifier(task_id) == ("test.noop", "job-1")  # the seed's tuple
    assert tracker.get_task_identifier(task_id).identifier == "job-1"
    status = tracker.get_task_status(task_id)
    assert status == (2, "SCHEDULED")
    assert (status.status, status.status_name) == (Status.SCHEDULED, "SCHEDULED")


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.label)
def test_status_by_identifier_reports_every_status(task_type, status):
    TaskInstanceFactory(type=task_type, identifier="job-1", status=status)
    assert tracker.get_task_status_by_identifier("test.noop", "job-1") == (status, status.label)


def test_status_by_identifier_of_unknown_task_or_type(task_type):
    with pytest.raises(TaskNotFound, match="test.noop::nope"):
        tracker.get_task_status_by_identifier("test.noop", "nope")
    with pytest.raises(UnknownTaskType, match="'nope'"):
        tracker.get_task_status_by_identifier("nope", "job-1")


def test_get_task_log_shape_and_order(running):
    task_id, attempt = running("job-1")
    tracker.set_task_progress(task_id, 1, 2, "half", attempt=attempt)
    tracker.stop_task_success(task_id, "done", attempt=attempt)

    log = tracker.get_task_log("test.noop", "job-1")

    assert [(entry.status, entry.message) for entry in log] == [
        ((Status.ACCEPTED, "ACCEPTED"), ""),
        ((Status.SCHEDULED, "SCHEDULED"), ""),
        ((Status.RUNNING, "RUNNING"), ""),
        ((Status.RUNNING, "RUNNING"), "half"),
        ((Status.FINISHED, "FINISHED"), "done"),
    ]
    times = [entry.time for entry in log]
    assert times == sorted(times)
    time, (status, name), message = log[-1]
    assert (status, name, message) == (Status.FINISHED, "FINISHED", "done")
    assert time == TaskInstance.objects.get(pk=task_id).finished_at


def test_get_task_log_orders_by_time_not_by_insertion(task_type):
    task = TaskInstanceFactory(type=task_type, identifier="job-1")
    LogRecordFactory(instance=task, time=ago(10), message="second")
    LogRecordFactory(instance=task, time=ago(20), message="first")

    assert [entry.message for entry in tracker.get_task_log("test.noop", "job-1")] == [
        "first",
        "second",
    ]


def test_get_task_log_of_unknown_task_or_type(task_type):
    with pytest.raises(TaskNotFound):
        tracker.get_task_log("test.noop", "nope")
    with pytest.raises(UnknownTaskType):
        tracker.get_task_log("nope", "job-1")


def test_count_by_status_lists_every_status(task_type):
    TaskInstanceFactory.create_batch(2, type=task_type, status=Status.RUNNING)
    TaskInstanceFactory(type=task_type, status=Status.FAILED)

    counts = tracker.count_by_status()

    assert list(counts) == [status.label for status in Status]
    assert counts["RUNNING"] == 2 and counts["FAILED"] == 1
    assert sum(counts.values()) == 3


# --- deleting ---------------------------------------------------------------------------


def test_delete_task_deletes_log_and_response(task_type):
    task = TaskInstanceFactory(type=task_type, status=Status.FINISHED)
    LogRecordFactory.create_batch(2, instance=task)
    ResponseFactory(instance=task)
    other = TaskInstanceFactory(type=task_type)
    LogRecordFactory(instance=other)

    assert tracker.delete_task(task.pk) is True

    assert list(TaskInstance.objects.all()) == [other]
    assert list(LogRecord.objects.values_list("instance", flat=True)) == [other.pk]
    assert not Response.objects.exists()


def test_delete_missing_task_is_a_no_op(task_type):
    with nothing_written():
        assert tracker.delete_task(UNKNOWN) is False


def test_delete_task_by_identifier(task_type):
    task = TaskInstanceFactory(type=task_type, identifier="job-1")
    LogRecordFactory(instance=task)
    ResponseFactory(instance=task)

    assert tracker.delete_task_by_identifier("test.noop", "job-1") is True
    assert not TaskInstance.objects.exists()
    assert not LogRecord.objects.exists() and not Response.objects.exists()

    with nothing_written():
        assert tracker.delete_task_by_identifier("test.noop", "job-1") is False


def test_delete_task_by_identifier_of_unknown_type_raises(task_type):
    TaskInstanceFactory(type=task_type, identifier="job-1")
    with nothing_written(), pytest.raises(UnknownTaskType, match="'nope'"):
        tracker.delete_task_by_identifier("nope", "job-1")


# --- unknown task ids -------------------------------------------------------------------

BY_ID = {
    "get_task_info": tracker.get_task_info,
    "get_task_identifier": tracker.get_task_identifier,
    "get_task_status": tracker.get_task_status,
    "reenqueue_task": tracker.reenqueue_task,
    "start_task": tracker.start_task,
    "begin_attempt": tracker.begin_attempt,
    "stop_task_success": tracker.stop_task_success,
    "stop_task_success_if_not_finished": tracker.stop_task_success_if_not_finished,
    "stop_task_failure": tracker.stop_task_failure,
    "pause_task": tracker.pause_task,
    "resume_task": tracker.resume_task,
    "revoke_task": tracker.revoke_task,
    "wait_for_subtasks": tracker.wait_for_subtasks,
    "heartbeat": tracker.heartbeat,
    "set_task_response": lambda task_id: tracker.set_task_response(task_id, b"x"),
    "set_task_progress": lambda task_id: tracker.set_task_progress(task_id, 1),
}


@pytest.mark.parametrize("call", BY_ID.values(), ids=BY_ID.keys())
@pytest.mark.parametrize("task_id", [UNKNOWN, "not-a-number", None], ids=repr)
def test_unknown_task_id_raises_task_not_found(task_type, call, task_id):
    TaskInstanceFactory(type=task_type)
    with nothing_written(), pytest.raises(TaskNotFound, match=f"no task with id {task_id!r}"):
        call(task_id)
