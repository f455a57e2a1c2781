"""Unique tasks: one task per type and unique key while it has not ended (or is recent).

Every test runs on both enqueue paths: the one-statement SQL insert (PostgreSQL) and the
ORM (SQLite, and PostgreSQL with the SQL path switched off).
"""

from datetime import timedelta

import pytest
from django.test import override_settings

from atp import sql, tracker
from atp.exceptions import InvalidInput, QueueFull
from atp.models import LogRecord, Status, TaskInstance
from tests.conftest import ON_POSTGRES
from tests.support.helpers import ago, nothing_written

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["sql", "orm"])
def path(request, monkeypatch, task_type):
    """Which enqueue path the test exercises (``sql`` only exists on PostgreSQL)."""
    if request.param == "sql" and not ON_POSTGRES:
        pytest.skip("the SQL enqueue path is PostgreSQL's")
    if request.param == "orm":
        monkeypatch.setattr(sql, "is_postgresql", lambda: False)
    return request.param


def _end(task_id, status=Status.FINISHED):
    TaskInstance.objects.filter(pk=task_id).update(status=status)


def test_a_held_key_returns_the_holder_and_writes_nothing(path, task_type):
    first, created = tracker.enqueue_unique(task_type.identifier, unique_key="sync-42")
    assert created
    with nothing_written():
        again, created = tracker.enqueue_unique(
            task_type.identifier, input={"other": 1}, unique_key="sync-42"
        )
        plain = tracker.enqueue_task(task_type.identifier, unique_key="sync-42")
    assert (again, created, plain) == (first, False, first)
    assert LogRecord.objects.filter(instance_id=first).count() == 1
    # Another key, or no key, is another task.
    assert tracker.enqueue_unique(task_type.identifier, unique_key="sync-43")[1]
    assert tracker.enqueue_task(task_type.identifier) not in (first, None)


@pytest.mark.parametrize(
    "status", [Status.SCHEDULED, Status.RUNNING, Status.PAUSED, Status.WAITING]
)
def test_the_key_is_held_until_the_task_ends(path, task_type, status):
    first = tracker.enqueue_task(task_type.identifier, unique_key="k")
    TaskInstance.objects.filter(pk=first).update(status=status)
    assert tracker.enqueue_unique(task_type.identifier, unique_key="k") == (first, False)
    _end(first)
    second, created = tracker.enqueue_unique(task_type.identifier, unique_key="k")
    assert created and second != first
    assert TaskInstance.objects.get(pk=second).unique_key == "k"


def test_keys_are_per_type(path, task_type):
    tracker.register_task_type("test.other", "tests.support.handlers.noop")
    a = tracker.enqueue_task(task_type.identifier, unique_key="k")
    b, created = tracker.enqueue_unique("test.other", unique_key="k")
    assert created and a != b


@pytest.mark.parametrize("status", [Status.FINISHED, Status.FAILED, Status.REVOKED])
def test_unique_for_holds_the_key_after_the_task_ended(path, task_type, status):
    first = tracker.enqueue_task(task_type.identifier, unique_key="k", unique_for=60)
    _end(first, status)
    assert tracker.enqueue_unique(task_type.identifier, unique_key="k", unique_for=60) == (
        first,
        False,
    )
    # Without a window an ended task holds nothing; with one, only while it is young.
    TaskInstance.objects.filter(pk=first).update(enqueued_at=ago(61))
    second, created = tracker.enqueue_unique(
        task_type.identifier, unique_key="k", unique_for=timedelta(seconds=60)
    )
    assert created
    _end(second, status)
    third, created = tracker.enqueue_unique(task_type.identifier, unique_key="k")
    assert created and third not in (first, second)


def test_a_batch_creates_one_task_per_free_key(path, task_type):
    held = tracker.enqueue_task(task_type.identifier, unique_key="a")
    ids = tracker.enqueue_tasks(
        task_type.identifier,
        [
            (None, 1, {"unique_key": "a"}),
            (None, 2, {"unique_key": "b"}),
            (None, 3),
            (None, 4, {"unique_key": "b"}),
            (None, 5, {"concurrency_key": "c"}),
        ],
    )
    assert ids[0] == held
    assert ids[1] == ids[3] != held
    assert len(set(ids)) == 4
    created = TaskInstance.objects.exclude(pk=held)
    assert sorted(created.values_list("input", flat=True)) == [2, 3, 5]
    assert TaskInstance.objects.get(pk=ids[4]).concurrency_key == "c"
    assert LogRecord.objects.count() == 4
    # A batch-wide key: one task for the whole batch, and the next batch finds it.
    again = tracker.enqueue_tasks(task_type.identifier, [(None, 6), (None, 7)], unique_key="d")
    assert again[0] == again[1]
    assert tracker.enqueue_tasks(task_type.identifier, [(None, 8)], unique_key="d") == again[:1]


def test_a_batch_of_held_keys_fits_a_full_queue(path, task_type):
    ids = tracker.enqueue_tasks(task_type.identifier, [(None, 1, {"unique_key": "a"})])
    with override_settings(ATP={"MAX_QUEUE_SIZE": 1}):
        assert tracker.enqueue_task(task_type.identifier, unique_key="a") == ids[0]
        with nothing_written(), pytest.raises(QueueFull):
            tracker.enqueue_tasks(task_type.identifier, [(None, 2, {"unique_key": "a"}), (None, 3)])


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"unique_key": ""}, "unique_key must not be empty"),
        ({"unique_key": "x" * 65}, "unique_key 'xxxx"),
        ({"unique_key": 42}, "unique_key must be a string"),
        ({"concurrency_key": " "}, "concurrency_key must not be empty"),
        ({"concurrency_key": "y" * 65}, "concurrency_key 'yyyy"),
        ({"unique_key": "k", "unique_for": -1}, "unique_for must be at least 0"),
        ({"unique_for": 5}, "unique_for needs a unique_key"),
        ({"queue": "q" * 65}, "queue 'qqqq"),
    ],
)
def test_bad_keys_are_refused_and_nothing_is_written(path, task_type, options, named):
    with nothing_written(), pytest.raises(InvalidInput, match=named):
        tracker.enqueue_task(task_type.identifier, **options)
    with nothing_written(), pytest.raises(InvalidInput, match=named):
        tracker.enqueue_tasks(task_type.identifier, [(None, 1), (None, 2)], **options)
    keys = {name: value for name, value in options.items() if name.endswith("_key")}
    if keys == options:  # the same bad keys given per item
        with nothing_written(), pytest.raises(InvalidInput, match=named):
            tracker.enqueue_tasks(task_type.identifier, [(None, 1), (None, 2, keys)])


def test_a_bad_batch_item_is_refused(path, task_type):
    with nothing_written(), pytest.raises(InvalidInput, match="keys a dict"):
        tracker.enqueue_tasks(task_type.identifier, [(None, 1, {"priority": 3})])
    with nothing_written(), pytest.raises(InvalidInput, match="must be given"):
        tracker.enqueue_unique(task_type.identifier, unique_key=None)
