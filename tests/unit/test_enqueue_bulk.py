"""tracker.enqueue_tasks: many tasks in one transaction, all or nothing."""

import pytest
from django.test import override_settings

from atp import tracker
from atp.exceptions import DuplicateTask, InvalidInput, QueueFull, UnknownTaskType
from atp.models import LogRecord, Status, TaskInstance
from tests.support.helpers import nothing_written

pytestmark = pytest.mark.django_db


def test_bulk_enqueue_returns_ids_in_order_and_logs_each(task_type):
    ids = tracker.enqueue_tasks(task_type.identifier, [("a", {"n": 1}), ("b", [2]), (None, 3)])
    tasks = [TaskInstance.objects.get(pk=pk) for pk in ids]
    assert [task.identifier for task in tasks[:2]] == ["a", "b"]
    assert tasks[2].identifier == str(tasks[2].uuid)
    assert [task.input for task in tasks] == [{"n": 1}, [2], 3]
    assert {task.status for task in tasks} == {Status.ACCEPTED}
    assert (
        list(LogRecord.objects.filter(instance__in=ids).values_list("event", flat=True))
        == ["task-sent"] * 3
    )


def test_bulk_enqueue_of_nothing_is_a_no_op(task_type):
    assert tracker.enqueue_tasks(task_type.identifier, []) == []


@override_settings(ATP={"MAX_QUEUE_SIZE": 5})
def test_a_batch_that_does_not_fit_is_refused_whole(task_type, enqueue):
    enqueue("first")
    with nothing_written(), pytest.raises(QueueFull, match="cannot enqueue 5 task"):
        tracker.enqueue_tasks(task_type.identifier, [(f"t{n}", None) for n in range(5)])
    assert len(tracker.enqueue_tasks(task_type.identifier, [("x", 1), ("y", 2)])) == 2


@pytest.mark.parametrize(
    "items, error",
    [
        ([("same", 1), ("same", 2)], DuplicateTask),
        ([("ok", 1), ("", 2)], InvalidInput),
        ([("ok", 1), ("bad", {1, 2})], InvalidInput),
    ],
)
def test_bad_batches_write_nothing(task_type, items, error):
    with nothing_written(), pytest.raises(error):
        tracker.enqueue_tasks(task_type.identifier, items)


def test_a_batch_clashing_with_an_existing_task_writes_nothing(task_type, enqueue):
    enqueue("taken")
    with nothing_written(), pytest.raises(DuplicateTask, match="nothing was enqueued"):
        tracker.enqueue_tasks(task_type.identifier, [("fresh", 1), ("taken", 2)])


def test_unknown_type_is_refused(db):
    with pytest.raises(UnknownTaskType):
        tracker.enqueue_tasks("nope", [("a", 1)])
