"""Registering and unregistering task types: upsert semantics, validation, forced deletion."""

import pytest

from atp import tracker
from atp.exceptions import InvalidInput, UnknownTaskType
from atp.models import LogRecord, Response, Status, TaskInstance, TaskType
from tests.support.factories import LogRecordFactory, ResponseFactory, TaskInstanceFactory
from tests.support.helpers import nothing_written

pytestmark = pytest.mark.django_db


def test_register_creates_a_type_with_the_contract_defaults():
    task_type = tracker.register_task_type("resize", "tests.support.handlers.noop")

    stored = TaskType.objects.get(identifier="resize")
    assert stored.pk == task_type.pk
    assert (stored.handler, stored.timeout, stored.timeret, stored.maxrestart) == (
        "tests.support.handlers.noop",
        3600.0,
        -1.0,
        2,
    )
    assert (stored.priority, stored.queue, stored.max_queue_size) == (0, "default", None)
    assert stored.maxstart == 3


def test_register_stores_every_option():
    tracker.register_task_type(
        "resize",
        "tests.support.handlers.echo",
        timeout=60,
        timeret=600,
        maxrestart=5,
        priority=7,
        queue="images",
        max_queue_size=10,
        max_retries=3,
        retry_backoff=2.5,
        retry_backoff_max=30,
        rate_limit=" 10 / m ",
        soft_time_limit=50,
        hard_time_limit=55,
        options={"width": 640},
    )

    stored = TaskType.objects.get(identifier="resize")
    assert (stored.timeout, stored.timeret, stored.maxrestart) == (60.0, 600.0, 5)
    assert (stored.priority, stored.queue, stored.max_queue_size) == (7, "images", 10)
    assert (stored.max_retries, stored.retry_backoff, stored.retry_backoff_max) == (3, 2.5, 30.0)
    assert stored.rate_limit == "10/m"  # normalised
    assert (stored.soft_time_limit, stored.hard_time_limit) == (50.0, 55.0)
    assert stored.options == {"width": 640}


def test_register_again_updates_in_place_and_resets_unspecified_options():
    first = tracker.register_task_type(
        "resize",
        "tests.support.handlers.noop",
        timeout=60,
        maxrestart=5,
        priority=7,
        queue="images",
    )
    second = tracker.register_task_type("resize", "tests.support.handlers.echo", max_queue_size=3)

    assert second.pk == first.pk
    assert TaskType.objects.count() == 1
    stored = TaskType.objects.get()
    # The second call describes the whole type: what it leaves out is back to its default.
    assert stored.handler == "tests.support.handlers.echo"
    assert (stored.timeout, stored.maxrestart, stored.priority, stored.queue) == (
        3600.0,
        2,
        0,
        "default",
    )
    assert stored.max_queue_size == 3


def test_register_again_keeps_the_types_tasks():
    tracker.register_task_type("resize", "tests.support.handlers.noop")
    task_id = tracker.enqueue_task("resize", "photo-1")

    tracker.register_task_type("resize", "tests.support.handlers.echo", timeout=5)

    assert TaskInstance.objects.get(pk=task_id).type.handler == "tests.support.handlers.echo"


@pytest.mark.parametrize("timeret", [0, -1, -5, 0.0])
def test_timeret_of_zero_or_less_means_keep_forever(timeret):
    assert (
        tracker.register_task_type("t", "tests.support.handlers.noop", timeret=timeret).timeret
        == -1
    )


def test_positive_timeret_is_kept():
    assert tracker.register_task_type("t", "tests.support.handlers.noop", timeret=30).timeret == 30


@pytest.mark.parametrize(
    "identifier, match",
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 65, "65 characters long; the limit is 64"),
        (42, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_bad_identifier_is_refused(identifier, match):
    with nothing_written(), pytest.raises(InvalidInput, match=match):
        tracker.register_task_type(identifier, "tests.support.handlers.noop")


def test_identifier_of_64_characters_is_accepted():
    assert (
        tracker.register_task_type("x" * 64, "tests.support.handlers.noop").identifier == "x" * 64
    )


@pytest.mark.parametrize(
    "handler, match",
    [
        ("noop", "must be a dotted path"),
        (None, "must be a dotted path"),
        ("tests.support.handlers.does_not_exist", "does not import"),
        ("no_such_package.handlers.run", "does not import"),
        ("tests.support.broken_handlers.run", "does not import"),
        ("tests.support.handlers.NOT_CALLABLE", "is not callable"),
    ],
)
def test_handler_that_does_not_import_or_is_not_callable_is_refused(handler, match):
    with nothing_written(), pytest.raises(InvalidInput, match=match) as caught:
        tracker.register_task_type("resize", handler)
    assert "'resize'" in str(caught.value)  # the message names the task type


def test_bad_handler_on_update_leaves_the_type_unchanged():
    tracker.register_task_type("resize", "tests.support.handlers.noop", timeout=60)

    with nothing_written(), pytest.raises(InvalidInput):
        tracker.register_task_type("resize", "tests.support.handlers.NOT_CALLABLE")

    stored = TaskType.objects.get()
    assert (stored.handler, stored.timeout) == ("tests.support.handlers.noop", 60.0)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"timeout": 0}, "timeout must be greater than 0"),
        ({"timeout": -1}, "timeout must be greater than 0"),
        ({"timeout": "60"}, "timeout must be a finite number"),
        ({"timeout": float("inf")}, "timeout must be a finite number"),
        ({"timeret": "forever"}, "timeret must be a finite number"),
        ({"maxrestart": -1}, "maxrestart must be at least 0"),
        ({"maxrestart": 1.5}, "maxrestart must be an integer"),
        ({"colour": "blue"}, r"unknown option\(s\) \['colour'\]"),
        ({"rate_limit": "10/x"}, "rate_limit must look like"),
        ({"rate_limit": "many/m"}, "rate_limit must look like"),
        ({"rate_limit": 10}, "rate_limit must look like"),
        ({"max_queue_size": 0}, "max_queue_size must be at least 1"),
        ({"max_queue_size": -3}, "max_queue_size must be at least 1"),
        ({"max_queue_size": "5"}, "max_queue_size must be an integer"),
        ({"max_queue_size": True}, "max_queue_size must be an integer"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"queue": ""}, "queue must not be empty"),
        ({"max_retries": -1}, "max_retries must be at least 0"),
        ({"retry_backoff": -1}, "retry_backoff must be at least 0"),
        ({"soft_time_limit": 0}, "soft_time_limit must be greater than 0"),
        ({"hard_time_limit": -1}, "hard_time_limit must be greater than 0"),
        ({"options": ["a"]}, "options must be a dict"),
        ({"options": {"s": {1, 2}}}, "not JSON-serialisable"),
    ],
)
def test_bad_value_is_refused_before_anything_is_written(options, match):
    with nothing_written(), pytest.raises(InvalidInput, match=match):
        tracker.register_task_type("resize", "tests.support.handlers.noop", **options)


def test_none_means_no_limit_for_the_optional_options():
    stored = tracker.register_task_type(
        "t",
        "tests.support.handlers.noop",
        max_queue_size=None,
        soft_time_limit=None,
        rate_limit=None,
    )
    assert (stored.max_queue_size, stored.soft_time_limit, stored.rate_limit) == (None, None, "")


def test_unregister_deletes_a_type_without_tasks():
    tracker.register_task_type("resize", "tests.support.handlers.noop")

    tracker.unregister_task_type("resize")

    assert not TaskType.objects.exists()


def test_unregister_unknown_type_raises():
    with nothing_written(), pytest.raises(UnknownTaskType, match="'nope'.*register_task_type"):
        tracker.unregister_task_type("nope")


def test_unregister_refuses_a_type_with_tasks():
    tracker.register_task_type("resize", "tests.support.handlers.noop")
    tracker.enqueue_task("resize", "photo-1")
    tracker.enqueue_task("resize", "photo-2")

    with nothing_written(), pytest.raises(InvalidInput, match="2 task.*force=True"):
        tracker.unregister_task_type("resize")

    assert TaskType.objects.filter(identifier="resize").exists()


def test_unregister_with_force_deletes_tasks_logs_and_responses():
    task_type = tracker.register_task_type("resize", "tests.support.handlers.noop")
    other = tracker.register_task_type("other", "tests.support.handlers.noop")
    for status in (Status.ACCEPTED, Status.RUNNING, Status.FINISHED):
        task = TaskInstanceFactory(type=task_type, status=status)
        LogRecordFactory(instance=task)
        ResponseFactory(instance=task)
    kept = TaskInstanceFactory(type=other)
    LogRecordFactory(instance=kept)
    ResponseFactory(instance=kept)

    tracker.unregister_task_type("resize", force=True)

    assert list(TaskType.objects.values_list("identifier", flat=True)) == ["other"]
    assert list(TaskInstance.objects.all()) == [kept]
    assert list(LogRecord.objects.values_list("instance", flat=True)) == [kept.pk]
    assert list(Response.objects.values_list("instance", flat=True)) == [kept.pk]
