"""Eager mode and ``drain()``: tasks run in the calling process, as a daemon would run them."""

import pytest
from django.db import transaction

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance
from atp.testing import DrainLimitReached, EagerTaskFailed, drain
from tests.taskapp import tasks


@pytest.mark.django_db
def test_eager_runs_the_task_at_once_outside_a_transaction(atp_eager):
    handle = tasks.add.enqueue(1, b=2)
    assert handle.status == "SUCCESS"
    assert handle.result == 3
    events = list(
        LogRecord.objects.filter(instance_id=handle.id)
        .order_by("id")
        .values_list("event", flat=True)
    )
    assert events == ["task-sent", "task-received", "task-started", "task-succeeded"]


@pytest.mark.django_db(transaction=True)
def test_eager_waits_for_the_commit_and_a_rollback_runs_nothing(atp_eager):
    with transaction.atomic():
        handle = tasks.add.enqueue(5)
        assert handle.status == "PENDING"
    assert handle.result == 5

    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.enqueue(6)
        raise RuntimeError("roll back")
    assert TaskInstance.objects.count() == 1


@pytest.mark.django_db
def test_eager_runs_what_a_task_enqueues_and_subtasks_roll_up(atp_eager):
    handle = tasks.fan_out.enqueue(3)
    assert handle.result == 3
    added = TaskInstance.objects.filter(type__identifier=tasks.add.name)
    assert sorted(added.values_list("result", flat=True)) == [1, 2, 3]

    tracker.register_task_type("test.parent", "tests.support.handlers.fan_out")
    tracker.register_task_type("test.item", "tests.support.handlers.item")
    parent = tracker.enqueue_task("test.parent", None, {"type": "test.item", "items": [{}, {}]})
    assert TaskInstance.objects.get(pk=parent).status == Status.FINISHED
    assert TaskInstance.objects.filter(parent_id=parent, status=Status.FINISHED).count() == 2


@pytest.mark.django_db
def test_eager_stores_errors_and_raises_them_only_when_asked(atp_eager, settings):
    failed = tasks.fail.enqueue("stored")
    assert failed.status == "FAILURE"

    settings.ATP = {**settings.ATP, "EAGER_PROPAGATE": True}
    with pytest.raises(EagerTaskFailed, match="ValueError: raised") as raised:
        tasks.fail.enqueue("raised")
    assert isinstance(raised.value.__cause__, ValueError)
    assert TaskInstance.objects.filter(status=Status.FAILED).count() == 2


@pytest.mark.django_db
def test_eager_retries_like_a_daemon(atp_eager):
    tracker.register_task_type(
        "test.retry", "tests.support.retry_handlers.retry_with_countdown", max_retries=2
    )
    task_id = tracker.enqueue_task("test.retry", None, {"countdown": 0})
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.retries) == (Status.FAILED, 2)


@pytest.mark.django_db
def test_drain_runs_due_tasks_and_what_they_enqueue_and_returns_their_ids():
    first = tasks.fan_out.enqueue(2)
    later = tasks.add.using(countdown=600).enqueue(9)
    ran = drain()
    assert ran[0] == first.id and len(ran) == 3
    assert later.status == "PENDING"  # not due yet
    assert drain() == []


@pytest.mark.django_db
def test_drain_stops_at_max_tasks():
    handles = [tasks.add.enqueue(n) for n in range(3)]
    with pytest.raises(DrainLimitReached):
        drain(max_tasks=2)
    assert [handle.status for handle in handles] == ["SUCCESS", "SUCCESS", "PENDING"]
