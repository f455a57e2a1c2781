"""Enqueueing: ids and identifiers, JSON-only input, duplicates, options and queue limits."""

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from atp import tracker
from atp.exceptions import (
    DuplicateTask,
    InvalidInput,
    QueueFull,
    TaskNotFound,
    UnknownTaskType,
)
from atp.models import LogRecord, Status, TaskInstance
from tests.support.helpers import nothing_written

pytestmark = pytest.mark.django_db


def _between(before, value, after, offset):
    """Whether ``value`` lies between ``before + offset`` and ``after + offset``."""
    return before + offset <= value <= after + offset


# --- ids, identifiers and the written rows ----------------------------------------------


def test_enqueue_returns_the_id_of_a_new_accepted_task_and_logs_task_sent(task_type):
    task_id = tracker.enqueue_task("test.noop", "job-1", {"a": [1, 2]}, message="hello")

    task = TaskInstance.objects.get(pk=task_id)
    assert (task.type, task.identifier, task.status) == (task_type, "job-1", Status.ACCEPTED)
    assert task.input == {"a": [1, 2]}
    assert task.server_id == "" and task.attempts == 0
    record = LogRecord.objects.get(instance=task)
    assert (record.status, record.message, record.event) == (Status.ACCEPTED, "hello", "task-sent")
    assert record.fields["uuid"] == str(task.uuid)
    assert record.fields["name"] == "test.noop"
    assert record.fields["kwargs"] == repr({"a": [1, 2]})


def test_ids_are_distinct_and_increasing(enqueue):
    ids = [enqueue(f"job-{n}") for n in range(3)]
    assert ids == sorted(set(ids))


def test_identifier_defaults_to_the_tasks_uuid(enqueue):
    first, second = enqueue(), enqueue()

    for task_id in (first, second):
        task = TaskInstance.objects.get(pk=task_id)
        assert task.identifier == str(task.uuid)
        assert uuid.UUID(task.identifier).version == 4
    assert tracker.get_task_identifier(first) != tracker.get_task_identifier(second)


@pytest.mark.parametrize(
    "identifier, match",
    [
        ("", "must not be empty"),
        (" ", "must not be empty"),
        ("x" * 65, "the limit is 64"),
        (7, "must be a string"),
    ],
)
def test_bad_identifier_is_refused_and_nothing_written(enqueue, identifier, match):
    with nothing_written(), pytest.raises(InvalidInput, match=match):
        enqueue(identifier)


def test_identifier_of_64_characters_is_accepted(enqueue):
    assert tracker.get_task_identifier(enqueue("x" * 64)).identifier == "x" * 64


def test_unknown_type_is_refused_and_nothing_written(db):
    with nothing_written(), pytest.raises(UnknownTaskType, match="'nope'"):
        tracker.enqueue_task("nope", "job-1")


# --- input is JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{"a": None, "b": [True, 1.5, "x"]}, [1, 2, 3], "text", 42, None],
)
def test_json_input_round_trips(enqueue, value):
    task_id = enqueue("job", value)
    assert TaskInstance.objects.get(pk=task_id).input == value


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        {"when": datetime(2030, 1, 1, tzinfo=UTC)},
        object(),
        {"x": math.nan},
        [math.inf],
        b"bytes",
    ],
    ids=["set", "datetime", "object", "nan", "inf", "bytes"],
)
def test_input_that_is_not_json_is_refused_and_nothing_written(enqueue, value):
    with nothing_written(), pytest.raises(InvalidInput, match="test.noop::job.*JSON"):
        enqueue("job", value)


# --- duplicates -------------------------------------------------------------------------


def test_duplicate_identifier_raises_and_writes_nothing(enqueue):
    enqueue("job-1", {"first": True})

    with nothing_written(), pytest.raises(DuplicateTask, match="test.noop::job-1 already exists"):
        enqueue("job-1", {"second": True})

    assert TaskInstance.objects.get(identifier="job-1").input == {"first": True}


def test_duplicate_leaves_the_callers_transaction_usable(enqueue):
    enqueue("job-1")

    with transaction.atomic():
        with pytest.raises(DuplicateTask):
            enqueue("job-1")
        # The failed insert was rolled back to a savepoint: the caller's transaction goes on.
        second = enqueue("job-2")

    assert TaskInstance.objects.filter(pk=second).exists()
    assert LogRecord.objects.filter(instance_id=second).count() == 1


def test_same_identifier_in_another_type_is_fine(enqueue):
    tracker.register_task_type("other", "tests.support.handlers.noop")
    enqueue("job-1")
    enqueue("job-1", type="other")
    assert TaskInstance.objects.filter(identifier="job-1").count() == 2


def test_enqueue_rolled_back_with_the_callers_transaction(enqueue):
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        enqueue("job-1")
        raise Abort

    assert not TaskInstance.objects.exists()
    assert not LogRecord.objects.exists()


# --- options ----------------------------------------------------------------------------


def test_priority_and_queue_default_to_the_types(db):
    tracker.register_task_type("t", "tests.support.handlers.noop", priority=5, queue="images")

    default = TaskInstance.objects.get(pk=tracker.enqueue_task("t", "a"))
    chosen = TaskInstance.objects.get(pk=tracker.enqueue_task("t", "b", priority=-2, queue="fast"))

    assert (default.priority, default.queue) == (5, "images")
    assert (chosen.priority, chosen.queue) == (-2, "fast")


def test_run_after_defaults_to_now(enqueue):
    before = timezone.now()
    task = TaskInstance.objects.get(pk=enqueue("a"))
    assert before <= task.run_after <= timezone.now()
    assert task.run_after == task.enqueued_at


@pytest.mark.parametrize("option", ["run_after", "eta"])
def test_run_after_and_eta_take_an_aware_datetime(enqueue, option):
    moment = timezone.now() + timedelta(hours=1)
    task = TaskInstance.objects.get(pk=enqueue("a", **{option: moment}))
    assert task.run_after == moment


def test_countdown_delays_by_seconds(enqueue):
    before = timezone.now()
    task = TaskInstance.objects.get(pk=enqueue("a", countdown=90))
    assert _between(before, task.run_after, timezone.now(), timedelta(seconds=90))


@pytest.mark.parametrize(
    "options",
    [
        {"run_after": timezone.now(), "eta": timezone.now()},
        {"run_after": timezone.now(), "countdown": 5},
        {"eta": timezone.now(), "countdown": 5},
    ],
    ids=["run_after+eta", "run_after+countdown", "eta+countdown"],
)
def test_run_after_eta_and_countdown_are_exclusive(enqueue, options):
    with nothing_written(), pytest.raises(InvalidInput, match="at most one of"):
        enqueue("a", **options)


def test_expires_takes_seconds_or_an_aware_datetime(enqueue):
    before = timezone.now()
    in_seconds = TaskInstance.objects.get(pk=enqueue("a", expires=30))
    moment = timezone.now() + timedelta(days=1)
    at_moment = TaskInstance.objects.get(pk=enqueue("b", expires=moment))
    never = TaskInstance.objects.get(pk=enqueue("c"))

    assert _between(before, in_seconds.expires, timezone.now(), timedelta(seconds=30))
    assert at_moment.expires == moment
    assert never.expires is None


@pytest.mark.parametrize("option", ["run_after", "eta", "expires"])
def test_naive_datetime_is_refused(enqueue, option):
    with nothing_written(), pytest.raises(InvalidInput, match="timezone-aware"):
        enqueue("a", **{option: datetime(2030, 1, 1, 12, 0)})


@pytest.mark.parametrize(
    "options, match",
    [
        ({"countdown": -1}, "countdown must be at least 0"),
        ({"countdown": "soon"}, "countdown must be a finite number"),
        ({"expires": "tomorrow"}, "expires must be a finite number"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"queue": "q" * 65}, "the limit is 64"),
        ({"colour": "blue"}, r"unknown option\(s\) \['colour'\]"),
    ],
)
def test_bad_option_is_refused_and_nothing_written(enqueue, options, match):
    with nothing_written(), pytest.raises(InvalidInput, match=match):
        enqueue("a", **options)


def test_parent_links_the_task_and_its_lineage(enqueue):
    root = enqueue("root")
    child = enqueue("child", parent=root)
    grandchild = enqueue("grandchild", parent=child)

    tasks = TaskInstance.objects.in_bulk([root, child, grandchild])
    assert tasks[grandchild].parent_id == child
    assert tasks[child].parent_id == root
    sent = LogRecord.objects.get(instance_id=grandchild).fields
    assert sent["parent_id"] == str(tasks[child].uuid)
    assert sent["root_id"] == str(tasks[root].uuid)


def test_unknown_parent_is_refused_and_nothing_written(enqueue):
    with nothing_written(), pytest.raises(TaskNotFound, match="999999"):
        enqueue("a", parent=999999)


# --- queue limits -----------------------------------------------------------------------


@override_settings(ATP={"MAX_QUEUE_SIZE": 3})
def test_global_limit_refuses_the_task_beyond_it(enqueue):
    for n in range(3):
        enqueue(f"job-{n}")

    with nothing_written(), pytest.raises(QueueFull, match="'test.noop'.*limit is 3"):
        enqueue("job-3")

    assert tracker.get_queue_size() == 3


@override_settings(ATP={"MAX_QUEUE_SIZE": 2})
def test_only_waiting_tasks_count_against_the_limit(enqueue):
    first = enqueue("job-0")
    enqueue("job-1")
    assert tracker.dequeue_task("server-1") == [first]

    enqueue("job-2")  # the claimed task no longer waits: there is room again

    with pytest.raises(QueueFull):
        enqueue("job-3")


@override_settings(ATP={"MAX_QUEUE_SIZE": 2})
def test_types_without_their_own_limit_share_the_global_bucket(enqueue):
    tracker.register_task_type("other", "tests.support.handlers.noop")
    enqueue("a")
    enqueue("b", type="other")

    with pytest.raises(QueueFull, match="the shared queue"):
        enqueue("c", type="other")
    with pytest.raises(QueueFull):
        enqueue("c")


@override_settings(ATP={"MAX_QUEUE_SIZE": 2})
def test_type_with_its_own_limit_counts_only_its_own_tasks(enqueue):
    tracker.register_task_type("big", "tests.support.handlers.noop", max_queue_size=4)
    enqueue("a")
    enqueue("b")  # the shared bucket is full now

    for n in range(4):
        tracker.enqueue_task("big", f"big-{n}")  # not blocked by the shared bucket
    with nothing_written(), pytest.raises(QueueFull, match="task type 'big'.*limit is 4"):
        tracker.enqueue_task("big", "big-4")

    # ...and its waiting tasks do not use up the shared bucket either.
    assert tracker.get_queue_size("test.noop") == 2
    tracker.dequeue_task("server-1")  # claims a (priority/FIFO order): one shared slot free
    enqueue("c")


@override_settings(ATP={"MAX_QUEUE_SIZE": 1})
def test_type_limit_may_be_below_the_global_one(db):
    tracker.register_task_type("small", "tests.support.handlers.noop", max_queue_size=1)
    tracker.register_task_type("shared", "tests.support.handlers.noop")
    tracker.enqueue_task("small", "a")
    tracker.enqueue_task("shared", "a")

    with pytest.raises(QueueFull):
        tracker.enqueue_task("small", "b")


@override_settings(ATP={"MAX_QUEUE_SIZE": None})
def test_no_global_limit_means_unlimited(enqueue):
    for n in range(100):
        enqueue(f"job-{n}")
    assert tracker.get_queue_size() == 100
    assert tracker.get_max_queue_size() is None


@override_settings(ATP={"MAX_QUEUE_SIZE": 1})
def test_reenqueue_ignores_the_limit(enqueue):
    first = enqueue("job-0")
    tracker.dequeue_task("server-1")
    enqueue("job-1")  # the queue is full again

    tracker.reenqueue_task(first, "given back")

    assert tracker.get_queue_size() == 2
    assert tracker.get_task_status(first).status == Status.ACCEPTED


def test_default_global_limit_is_64(enqueue):
    assert tracker.get_max_queue_size() == 64
    for n in range(64):
        enqueue(f"job-{n}")
    with pytest.raises(QueueFull):
        enqueue("job-64")


@override_settings(ATP={"MAX_QUEUE_SIZE": 10})
def test_get_queue_size_and_max_queue_size(enqueue):
    tracker.register_task_type("own", "tests.support.handlers.noop", max_queue_size=3)
    enqueue("a")
    enqueue("b")
    tracker.enqueue_task("own", "a")
    tracker.dequeue_task("server-1", limit=1)  # a is claimed and no longer waits

    assert tracker.get_queue_size() == 2
    assert tracker.get_queue_size("test.noop") == 1
    assert tracker.get_queue_size("own") == 1
    assert tracker.get_max_queue_size() == 10
    assert tracker.get_max_queue_size("test.noop") == 10
    assert tracker.get_max_queue_size("own") == 3
    with pytest.raises(UnknownTaskType):
        tracker.get_queue_size("nope")
    with pytest.raises(UnknownTaskType):
        tracker.get_max_queue_size("nope")
