"""Dequeueing: claim order, due times, queues, expiry and what a claim records."""

from datetime import timedelta

import pytest
from django.utils import timezone

from atp import tracker
from atp.exceptions import InvalidInput, QueueEmpty
from atp.models import LogRecord, Status, TaskInstance
from tests.support.factories import TaskInstanceFactory
from tests.support.helpers import nothing_written

pytestmark = pytest.mark.django_db


def _claim_all(server_id="server-1", **options) -> list[int]:
    """Dequeue one task at a time until the queue is empty; return the ids in claim order."""
    claimed = []
    while True:
        try:
            claimed += tracker.dequeue_task(server_id, **options)
        except QueueEmpty:
            return claimed


def test_empty_queue_raises_queue_empty(task_type):
    with nothing_written(), pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1")


def test_dequeue_returns_a_list_of_one_id_by_default(enqueue):
    first = enqueue("a")
    enqueue("b")
    assert tracker.dequeue_task("server-1") == [first]


def test_higher_priority_is_claimed_first(enqueue):
    low = enqueue("low", priority=0)
    high = enqueue("high", priority=5)
    negative = enqueue("negative", priority=-3)
    middle = enqueue("middle", priority=3)

    assert _claim_all() == [high, middle, low, negative]


def test_equal_priority_is_first_in_first_out(enqueue):
    ids = [enqueue(f"job-{n}") for n in range(5)]
    assert _claim_all() == ids


def test_equal_priority_and_due_time_falls_back_to_id(task_type):
    moment = timezone.now() - timedelta(seconds=5)
    tasks = [TaskInstanceFactory(type=task_type, run_after=moment) for _ in range(3)]
    assert _claim_all() == [task.pk for task in tasks]


def test_earlier_run_after_goes_first_within_a_priority(enqueue):
    later = enqueue("later")
    earlier = enqueue("earlier", run_after=timezone.now() - timedelta(minutes=5))
    assert _claim_all() == [earlier, later]


def test_task_due_in_the_future_is_not_claimed(enqueue):
    future = enqueue("future", countdown=3600)
    due = enqueue("due")

    assert tracker.dequeue_task("server-1") == [due]
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1")
    assert tracker.get_task_status(future).status == Status.ACCEPTED


def test_task_becomes_claimable_once_due(enqueue):
    task_id = enqueue("a", countdown=3600)
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1")

    TaskInstance.objects.filter(pk=task_id).update(run_after=timezone.now())

    assert tracker.dequeue_task("server-1") == [task_id]


def test_limit_claims_several_in_claim_order(enqueue):
    ids = [enqueue(f"job-{n}", priority=n % 2) for n in range(5)]
    odd, even = ids[1::2], ids[0::2]

    assert tracker.dequeue_task("server-1", limit=3) == [*odd, even[0]]
    assert tracker.dequeue_task("server-1", limit=3) == even[1:]
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1", limit=3)


@pytest.mark.parametrize("limit", [0, -1, 1.5, "2"])
def test_bad_limit_is_refused(enqueue, limit):
    enqueue("a")
    with nothing_written(), pytest.raises(InvalidInput, match="limit"):
        tracker.dequeue_task("server-1", limit=limit)


def test_queues_filter_claims_only_those_queues(enqueue):
    default = enqueue("default")
    fast = enqueue("fast", queue="fast")
    slow = enqueue("slow", queue="slow", priority=9)

    assert tracker.dequeue_task("server-1", queues=["fast"]) == [fast]
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1", queues=["fast"])
    assert _claim_all(queues=["default", "slow"]) == [slow, default]


def test_expired_task_is_revoked_not_claimed(enqueue):
    expired = enqueue("expired", expires=timezone.now() - timedelta(seconds=1))

    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1")

    task = TaskInstance.objects.get(pk=expired)
    assert task.status == Status.REVOKED
    assert task.server_id == "" and task.finished_at is not None
    record = LogRecord.objects.filter(instance=task).latest("id")
    assert (record.status, record.event) == (Status.REVOKED, "task-revoked")
    assert record.fields["expired"] is True
    assert record.fields["terminated"] is False
    assert "Expired" in record.message


def test_expired_tasks_are_skipped_for_the_next_due_one(enqueue):
    expired = [
        enqueue(f"expired-{n}", priority=5, expires=timezone.now() - timedelta(seconds=1))
        for n in range(3)
    ]
    fresh = enqueue("fresh")
    not_yet = enqueue("not-yet", expires=timezone.now() + timedelta(hours=1))

    assert tracker.dequeue_task("server-1") == [fresh]
    assert tracker.dequeue_task("server-1") == [not_yet]
    statuses = dict(TaskInstance.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in expired] == [Status.REVOKED] * 3


def test_claim_stores_the_server_id_and_logs_task_received(enqueue):
    task_id = enqueue("a", {"x": 1})
    before = timezone.now()

    assert tracker.dequeue_task("server-9", "claimed") == [task_id]

    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.server_id) == (Status.SCHEDULED, "server-9")
    assert before <= task.received_at == task.updated_at <= timezone.now()
    assert task.attempts == 0  # claiming is not starting
    record = LogRecord.objects.filter(instance=task).latest("id")
    assert (record.status, record.event, record.message) == (
        Status.SCHEDULED,
        "task-received",
        "claimed",
    )
    assert record.fields["server_id"] == "server-9"
    assert record.fields["name"] == "test.noop"
    assert record.fields["kwargs"] == repr({"x": 1})


def test_claimed_task_is_not_claimed_again(enqueue):
    task_id = enqueue("a")
    assert tracker.dequeue_task("server-1") == [task_id]
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-2")
    assert TaskInstance.objects.get(pk=task_id).server_id == "server-1"


@pytest.mark.parametrize("status", [s for s in Status if s != Status.ACCEPTED])
def test_only_accepted_tasks_are_claimed(task_type, status):
    TaskInstanceFactory(type=task_type, status=status)
    with nothing_written(), pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-2")


def test_the_claim_order_is_written_once():
    """The ORM claim, the ready index and the PostgreSQL statement all take CLAIM_ORDER."""
    from atp import sql
    from atp.models import CLAIM_ORDER
    from atp.sql import claim

    assert tuple(TaskInstance.objects.ready().query.order_by) == CLAIM_ORDER
    (index,) = [index for index in TaskInstance._meta.indexes if index.name == "atp_task_ready"]
    assert tuple(index.fields) == CLAIM_ORDER
    assert sql.order_by(CLAIM_ORDER) == "priority DESC, run_after, id"
    assert "ORDER BY {claim_order}" in claim.CLAIM
