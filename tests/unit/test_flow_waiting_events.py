"""The ``task-pending`` event: why a task waits, written once when the reason appears.

Each reason produces the event (with ``reason`` and what it names), on both enqueue paths and
both databases; claims that meet a waiting task again (every poll) write nothing more; Celery's
tools read it as the PENDING state it is, and the admin's task page lists it.
"""

import io
from datetime import timedelta

import pytest
from django.utils import timezone

from atp import control, events, tracker
from atp.models import LogRecord, Status, TaskInstance
from tests.support.admin_fixtures import TASKS
from tests.support.helpers import age

pytestmark = pytest.mark.django_db

PENDING = events.TASK_PENDING


def _waits(task_id) -> list[tuple[str, dict]]:
    """The task's ``task-pending`` events, oldest first: (reason, fields)."""
    records = LogRecord.objects.filter(instance_id=task_id, event=PENDING).order_by("id")
    return [(record.fields["reason"], record.fields) for record in records]


def _reasons(task_id) -> list[str]:
    return [reason for reason, _ in _waits(task_id)]


def _poll(times=3, limit=10, queues=None):
    """Claim ``times`` times, as a daemon polling would; return what was claimed."""
    return [
        attempt
        for _ in range(times)
        for attempt in tracker.claim_tasks("s1", limit=limit, queues=queues)
    ]


@pytest.fixture
def limited(db):
    return tracker.register_task_type(
        "test.limited", "tests.support.handlers.noop", concurrency_limit=1
    )


@pytest.fixture
def rated(db):
    return tracker.register_task_type("test.rated", "tests.support.handlers.noop", rate_limit="1/h")


ENQUEUES = {
    "one": lambda name, **options: [tracker.enqueue_task(name, **options)],
    "batch": lambda name, **options: tracker.enqueue_tasks(name, [(None, 1), (None, 2)], **options),
    "unique": lambda name, **options: [tracker.enqueue_unique(name, unique_key="u", **options)[0]],
}


@pytest.mark.parametrize("enqueue", ENQUEUES.values(), ids=ENQUEUES.keys())
def test_a_task_due_later_says_so_once_at_enqueue(task_type, enqueue):
    ids = enqueue(task_type.identifier, countdown=3600)
    _poll()
    for task_id in ids:
        task = TaskInstance.objects.get(pk=task_id)
        ((reason, fields),) = _waits(task_id)
        assert reason == "later"
        assert fields["eta"] == task.run_after.isoformat()
        assert fields["uuid"] == str(task.uuid)
        record = LogRecord.objects.get(instance_id=task_id, event=PENDING)
        assert record.status == Status.ACCEPTED
        assert record.message.startswith("Waiting: due later, at ")
    # A task due now says nothing: nothing holds it back.
    (now,) = ENQUEUES["one"](task_type.identifier)
    assert _waits(now) == []


@pytest.mark.parametrize("enqueue", ENQUEUES.values(), ids=ENQUEUES.keys())
def test_enqueueing_into_a_paused_queue_or_type_says_so(task_type, enqueue):
    control.pause_queue("mail")
    in_queue = enqueue(task_type.identifier, queue="mail")
    control.pause_task_type(task_type.identifier)
    TaskInstance.objects.update(unique_key=None)  # the unique enqueue makes a new task
    both = enqueue(task_type.identifier, queue="mail", countdown=60)
    _poll()
    for task_id in in_queue:
        ((reason, fields),) = _waits(task_id)[:1]
        assert (reason, fields["queue"]) == ("queue", "mail")
    for task_id in both:  # every reason that holds at enqueue, once each
        assert _reasons(task_id) == ["later", "queue", "type"]
        assert _waits(task_id)[2][1]["name"] == task_type.identifier


def test_pausing_writes_one_event_per_waiting_task_and_polls_add_none(task_type):
    other = tracker.register_task_type("test.other", "tests.support.handlers.noop")
    mail = tracker.enqueue_tasks(task_type.identifier, [(None, n) for n in range(3)], queue="mail")
    reports = tracker.enqueue_task(task_type.identifier, queue="reports")
    running = tracker.enqueue_task(other.identifier, queue="mail", priority=5)
    (attempt,) = tracker.claim_tasks("s1", limit=1)
    assert attempt.task_id == running
    assert control.pause_queue("mail") is True
    for task_id in mail:
        ((reason, fields),) = _waits(task_id)
        assert reason == "queue" and fields["queue"] == "mail"
        assert fields["uuid"] == str(TaskInstance.objects.get(pk=task_id).uuid)
        assert fields["hostname"] == events.node_name()
    assert _waits(reports) == [] and _waits(running) == []  # not waiting, or not paused
    assert control.pause_queue("mail") is False  # already paused: nothing written
    assert _poll(queues=["mail"]) == []
    assert [len(_waits(task_id)) for task_id in mail] == [1, 1, 1]
    # A type pause: one event per waiting task of the type, whatever its queue.
    assert control.pause_task_type(task_type.identifier) is True
    assert _reasons(reports) == ["type"]
    assert [_reasons(task_id) for task_id in mail] == [["queue", "type"]] * 3
    _poll()
    assert _reasons(reports) == ["type"]


def test_a_blocked_task_waits_for_its_dependencies(task_type):
    first = tracker.enqueue_task(task_type.identifier)
    second = tracker.enqueue_task(task_type.identifier)
    after = tracker.enqueue_task(task_type.identifier, depends_on=[first, second])
    ((reason, fields),) = _waits(after)
    assert (reason, fields["dependencies"]) == ("dependencies", 2)
    assert LogRecord.objects.get(instance_id=after, event=PENDING).status == Status.BLOCKED


def test_a_full_concurrency_key_says_so_once_however_many_polls(limited):
    ids = tracker.enqueue_tasks(
        limited.identifier, [(None, n) for n in range(3)], concurrency_key="k"
    )
    claimed = _poll(times=5)
    assert [attempt.task_id for attempt in claimed] == ids[:1]
    for task_id in ids[1:]:
        ((reason, fields),) = _waits(task_id)
        assert reason == "concurrency"
        assert (fields["concurrency_key"], fields["concurrency_limit"]) == ("k", 1)
    assert _waits(ids[0]) == []
    tracker.stop_task_success(ids[0], attempt=claimed[0].number)
    (next_one,) = _poll(times=4)
    assert next_one.task_id == ids[1]
    assert len(_waits(ids[2])) == 1  # still full, still the same reason: nothing new


def test_a_used_up_rate_limit_says_so_once_however_many_polls(rated):
    ids = tracker.enqueue_tasks(rated.identifier, [(None, n) for n in range(3)])
    claimed = _poll(times=5)
    assert [attempt.task_id for attempt in claimed] == ids[:1]
    for task_id in ids[1:]:
        ((reason, fields),) = _waits(task_id)
        assert (reason, fields["rate_limit"]) == ("rate", "1/h")


def test_a_new_reason_is_written_when_it_changes(limited):
    holder, waiter = tracker.enqueue_tasks(
        limited.identifier, [(None, 1), (None, 2)], concurrency_key="k"
    )
    _poll()
    assert _reasons(waiter) == ["concurrency"]
    control.pause_task_type(limited.identifier)
    _poll()
    assert _reasons(waiter) == ["concurrency", "type"]
    control.resume_task_type(limited.identifier)
    _poll(times=4)  # the key is still full: the reason is back, once
    assert _reasons(waiter) == ["concurrency", "type", "concurrency"]
    assert _reasons(holder) == []


def test_a_retry_with_backoff_is_due_later(running):
    task_id, attempt = running()
    later = timezone.now() + timedelta(minutes=5)
    tracker.reenqueue_task(task_id, "retry", attempt=attempt, run_after=later, retry=True)
    ((reason, fields),) = _waits(task_id)
    assert (reason, fields["eta"]) == ("later", later.isoformat())
    # A plain re-enqueue (due now, a cold stop's) into a paused queue says why it waits.
    task_id, attempt = running()
    control.pause_queue("default")
    tracker.reenqueue_task(task_id, "cold stop", attempt=attempt)
    assert _reasons(task_id) == ["queue"]


def test_a_restart_into_a_paused_type_says_so(task_type, running):
    task_id, _ = running()
    control.pause_task_type(task_type.identifier)
    age(TaskInstance.objects.filter(pk=task_id), 7200)
    tracker.reenqueue_zombie_tasks("swept")
    assert TaskInstance.objects.get(pk=task_id).status == Status.ACCEPTED
    assert _reasons(task_id) == ["type"]


def test_celery_reads_the_event_as_pending_and_moves_on(limited):
    from celery.events.dumper import Dumper
    from flower.events import EventsState

    holder, waiter = tracker.enqueue_tasks(
        limited.identifier, [(None, 1), (None, 2)], concurrency_key="k"
    )
    (attempt,) = _poll()
    state = events.state_from_events()
    task = state.tasks[str(TaskInstance.objects.get(pk=waiter).uuid)]
    assert (task.state, task.reason, task.concurrency_key) == ("PENDING", "concurrency", "k")
    # Flower's state takes it as any task event; the dump prints it.
    flower, out = EventsState(), io.StringIO()
    for record in events.stored_events():
        body = events.celery_event(record)
        body["local_received"] = body["timestamp"]
        flower.event(dict(body))
        Dumper(out=out).on_event(dict(body))
    assert flower.tasks[str(task.uuid)].state == "PENDING"
    assert "task pending" in out.getvalue() and "reason=concurrency" in out.getvalue()
    # Not a custom state that outranks the ones that follow: claimed, it is STARTED.
    tracker.stop_task_success(holder, attempt=attempt.number)
    _poll()
    assert events.state_from_events().tasks[str(task.uuid)].state == "STARTED"


def test_the_task_page_lists_the_event(superuser_client, task_type):
    control.pause_queue("mail")
    task_id = tracker.enqueue_task(task_type.identifier, queue="mail")
    page = superuser_client.get(f"{TASKS}{task_id}/change/").content.decode()
    assert PENDING in page
    assert "Waiting: queue &#x27;mail&#x27; is paused." in page
