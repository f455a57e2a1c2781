"""The sweeps: zombie recovery with the restart limit, and deletion of retired tasks."""

import pytest
from django.db import connection
from django.db.models import signals
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from atp import tracker
from atp.models import Dependency, LogRecord, Response, Status, TaskInstance, Workflow
from tests.support.factories import LogRecordFactory, ResponseFactory, TaskInstanceFactory
from tests.support.helpers import age, events_of

pytestmark = pytest.mark.django_db


def _start(task_id, server_id="server-1") -> int:
    """Claim and start the only waiting task; return its attempt number."""
    assert tracker.dequeue_task(server_id) == [task_id]
    return tracker.begin_attempt(task_id, server_id=server_id).number


def _task(task_id) -> TaskInstance:
    return TaskInstance.objects.get(pk=task_id)


@pytest.fixture
def zombie_type(db):
    """A task type whose tasks are zombies after 60 s without an update."""
    return tracker.register_task_type("zombie", "tests.support.handlers.noop", timeout=60)


# --- reenqueue_zombie_tasks -------------------------------------------------------------


def test_nothing_to_do_returns_an_empty_list(task_type):
    assert tracker.reenqueue_zombie_tasks() == []


@pytest.mark.parametrize("status", [Status.RUNNING, Status.PAUSED])
def test_stale_running_or_paused_task_is_reenqueued(zombie_type, status):
    task_id = tracker.enqueue_task("zombie", "job-1")
    _start(task_id)
    if status == Status.PAUSED:
        tracker.pause_task(task_id)
    age(TaskInstance.objects.filter(pk=task_id), 61)

    done = tracker.reenqueue_zombie_tasks()

    assert done == [(task_id, "zombie::job-1")]
    assert done[0].action == "reenqueued"
    task = _task(task_id)
    assert (task.status, task.server_id, task.attempts) == (Status.ACCEPTED, "", 1)
    assert events_of(task_id)[-1] == "task-retried"
    record = task.log.latest("id")
    assert record.status == Status.ACCEPTED
    assert "No update for 60 s" in record.message
    assert record.fields["exception"] == "TimeoutError"
    # Back in the queue: the next claim gets it, and its start is attempt 2.
    assert _start(task_id, "server-2") == 2


def test_stale_scheduled_task_is_reenqueued_without_failing(db):
    tracker.register_task_type("quick", "tests.support.handlers.noop", timeout=10, maxrestart=0)
    task_id = tracker.enqueue_task("quick", "job-1")
    tracker.dequeue_task("server-1")
    age(TaskInstance.objects.filter(pk=task_id), 30)  # past timeout, not past CLAIM_TIMEOUT

    assert [(*entry, entry.action) for entry in tracker.reenqueue_zombie_tasks()] == [
        (task_id, "quick::job-1", "reenqueued")
    ]
    assert _task(task_id).status == Status.ACCEPTED


def test_fresh_and_inactive_tasks_are_untouched(zombie_type):
    fresh = {
        status: TaskInstanceFactory(type=zombie_type, status=status)
        for status in (Status.SCHEDULED, Status.RUNNING, Status.PAUSED)
    }
    old = {
        status: TaskInstanceFactory(type=zombie_type, status=status)
        for status in (Status.ACCEPTED, Status.WAITING, Status.FINISHED, Status.FAILED)
    }
    age(TaskInstance.objects.filter(pk__in=[task.pk for task in old.values()]), 3600)
    age(TaskInstance.objects.filter(pk__in=[task.pk for task in fresh.values()]), 59)

    assert tracker.reenqueue_zombie_tasks() == []

    statuses = dict(TaskInstance.objects.values_list("pk", "status"))
    assert {statuses[task.pk] for task in fresh.values()} == set(fresh)
    assert {statuses[task.pk] for task in old.values()} == set(old)
    assert not LogRecord.objects.exists()


def test_each_type_has_its_own_timeout(zombie_type):
    patient = tracker.register_task_type("patient", "tests.support.handlers.noop", timeout=600)
    quick = TaskInstanceFactory(type=zombie_type, status=Status.RUNNING)
    slow = TaskInstanceFactory(type=patient, status=Status.RUNNING)
    age(TaskInstance.objects.all(), 120)

    assert [entry.task_id for entry in tracker.reenqueue_zombie_tasks()] == [quick.pk]
    assert _task(slow.pk).status == Status.RUNNING


def test_heartbeat_keeps_a_long_task_from_the_sweep(zombie_type):
    task_id = tracker.enqueue_task("zombie", "job-1")
    attempt = _start(task_id)
    age(TaskInstance.objects.filter(pk=task_id), 61)

    tracker.heartbeat(task_id, attempt=attempt)

    assert tracker.reenqueue_zombie_tasks() == []
    assert _task(task_id).status == Status.RUNNING


def test_maxrestart_0_fails_the_first_stale_attempt(db):
    tracker.register_task_type("once", "tests.support.handlers.noop", timeout=60, maxrestart=0)
    task_id = tracker.enqueue_task("once", "job-1")
    _start(task_id)
    age(TaskInstance.objects.filter(pk=task_id), 61)

    assert [(*entry, entry.action) for entry in tracker.reenqueue_zombie_tasks()] == [
        (task_id, "once::job-1", "failed")
    ]

    task = _task(task_id)
    assert task.status == Status.FAILED and task.finished_at is not None
    record = task.log.latest("id")
    assert record.event == "task-failed"
    assert "0 restart(s) (maxrestart) are used up" in record.message


def test_maxrestart_2_allows_two_restarts_then_fails(db):
    tracker.register_task_type("twice", "tests.support.handlers.noop", timeout=60, maxrestart=2)
    task_id = tracker.enqueue_task("twice", "job-1")
    actions = []
    for attempt in (1, 2, 3):
        assert _start(task_id) == attempt
        age(TaskInstance.objects.filter(pk=task_id), 61)
        actions += [entry.action for entry in tracker.reenqueue_zombie_tasks()]

    assert actions == ["reenqueued", "reenqueued", "failed"]
    task = _task(task_id)
    assert (task.status, task.attempts) == (Status.FAILED, 3)
    assert "on attempt 3" in task.log.latest("id").message
    assert "2 restart(s) (maxrestart) are used up" in task.log.latest("id").message


def test_retries_do_not_use_up_restarts(db):
    tracker.register_task_type("retry", "tests.support.handlers.noop", timeout=60, maxrestart=0)
    task_id = tracker.enqueue_task("retry", "job-1")
    attempt = _start(task_id)
    tracker.reenqueue_task(task_id, "retry", attempt=attempt, retry=True)
    _start(task_id)
    age(TaskInstance.objects.filter(pk=task_id), 61)

    # Attempt 2 was a retry the handler asked for, not a restart: this is its first timeout.
    assert [entry.action for entry in tracker.reenqueue_zombie_tasks()] == ["failed"]
    assert _task(task_id).attempts == 2


def test_the_sweep_message_is_logged(zombie_type):
    task = TaskInstanceFactory(type=zombie_type, status=Status.RUNNING)
    age(TaskInstance.objects.filter(pk=task.pk), 61)

    tracker.reenqueue_zombie_tasks("sweep by server-7:")

    assert task.log.latest("id").message.startswith(
        "sweep by server-7: No update for 60 s. Re-enqueued"
    )


def test_unstarted_claim_is_given_back_without_using_a_restart(db):
    tracker.register_task_type("slow", "tests.support.handlers.noop", timeout=3600, maxrestart=1)
    task_id = tracker.enqueue_task("slow", "job-1")
    for _ in range(3):
        tracker.dequeue_task("server-1")
        age(TaskInstance.objects.filter(pk=task_id), 61)  # past CLAIM_TIMEOUT (60 s)
        assert [(*e, e.action) for e in tracker.reenqueue_zombie_tasks()] == [
            (task_id, "slow::job-1", "reenqueued")
        ]
        task = _task(task_id)
        assert (task.status, task.server_id, task.attempts) == (Status.ACCEPTED, "", 0)
    record = task.log.latest("id")
    assert record.event == "task-retried"
    assert record.fields["exception"] == "claim timed out"
    assert "never started" in record.message

    # The three give-backs cost nothing: maxrestart=1 still allows one restart.
    _start(task_id)
    age(TaskInstance.objects.filter(pk=task_id), 3601)
    assert [entry.action for entry in tracker.reenqueue_zombie_tasks()] == ["reenqueued"]
    _start(task_id)
    age(TaskInstance.objects.filter(pk=task_id), 3601)
    assert [entry.action for entry in tracker.reenqueue_zombie_tasks()] == ["failed"]


@override_settings(ATP={"CLAIM_TIMEOUT": 5})
def test_claim_timeout_is_a_setting(task_type):
    task = TaskInstanceFactory(type=task_type, status=Status.SCHEDULED)
    age(TaskInstance.objects.filter(pk=task.pk), 6)

    assert [entry.task_id for entry in tracker.reenqueue_zombie_tasks()] == [task.pk]


def test_sweep_entries_unpack_as_the_seeds_id_name_pairs(zombie_type):
    """Issue 14.15: the seed's pairs; what was done is the ``action`` attribute."""
    task = TaskInstanceFactory(type=zombie_type, identifier="job-9", status=Status.RUNNING)
    age(TaskInstance.objects.filter(pk=task.pk), 61)

    pairs = [(task_id, name) for task_id, name in tracker.reenqueue_zombie_tasks()]

    assert pairs == [(task.pk, "zombie::job-9")]
    assert TaskInstance.objects.get(pk=task.pk).status == Status.ACCEPTED
    entry = tracker.SweepEntry(task.pk, "zombie::job-9", "reenqueued")
    assert (entry.task_id, entry.name, entry.action, len(entry)) == (
        task.pk,
        "zombie::job-9",
        "reenqueued",
        2,
    )


@override_settings(ATP={"CLEANUP_BATCH_SIZE": 2})
def test_zombie_sweep_works_through_all_batches(zombie_type):
    tasks = TaskInstanceFactory.create_batch(5, type=zombie_type, status=Status.RUNNING)
    age(TaskInstance.objects.all(), 61)

    done = tracker.reenqueue_zombie_tasks()

    assert sorted(entry.task_id for entry in done) == sorted(task.pk for task in tasks)
    assert set(TaskInstance.objects.values_list("status", flat=True)) == {Status.ACCEPTED}
    assert LogRecord.objects.filter(event="task-retried").count() == 5


# --- delete_retired_tasks ---------------------------------------------------------------


@pytest.fixture
def kept_a_minute(db):
    """A task type whose ended tasks are kept for 60 s."""
    return tracker.register_task_type("brief", "tests.support.handlers.noop", timeret=60)


def _ended(task_type, status, seconds_ago, **fields):
    task = TaskInstanceFactory(type=task_type, status=status, **fields)
    age(TaskInstance.objects.filter(pk=task.pk), seconds_ago, "finished_at")
    return task


def test_retired_tasks_are_deleted_and_returned(kept_a_minute):
    retired = [
        _ended(kept_a_minute, status, 61, identifier=status.label.lower())
        for status in (Status.FINISHED, Status.FAILED, Status.REVOKED)
    ]

    done = tracker.delete_retired_tasks()

    assert sorted(done) == sorted((task.pk, f"brief::{task.identifier}") for task in retired)
    assert {entry.action for entry in done} == {"deleted"}
    assert not TaskInstance.objects.exists()


def test_only_ended_tasks_past_their_types_timeret_are_deleted(kept_a_minute):
    forever = tracker.register_task_type("forever", "tests.support.handlers.noop")
    assert forever.timeret == -1
    old = _ended(kept_a_minute, Status.FINISHED, 61)
    young = _ended(kept_a_minute, Status.FINISHED, 59)
    kept_forever = _ended(forever, Status.FINISHED, 10**8)
    not_ended = [
        TaskInstanceFactory(type=kept_a_minute, status=status)
        for status in (Status.ACCEPTED, Status.RUNNING, Status.WAITING)
    ]
    age(TaskInstance.objects.filter(pk__in=[task.pk for task in not_ended]), 10**6)

    assert [entry.task_id for entry in tracker.delete_retired_tasks()] == [old.pk]

    remaining = set(TaskInstance.objects.values_list("pk", flat=True))
    assert remaining == {young.pk, kept_forever.pk, *(task.pk for task in not_ended)}


def test_deleting_cascades_to_log_and_response_and_unlinks_children(kept_a_minute):
    forever = tracker.register_task_type("forever", "tests.support.handlers.noop")
    retired = _ended(kept_a_minute, Status.FINISHED, 61)
    LogRecordFactory.create_batch(3, instance=retired)
    ResponseFactory(instance=retired)
    kept = _ended(forever, Status.FINISHED, 61, parent=retired)
    LogRecordFactory(instance=kept)
    ResponseFactory(instance=kept)

    tracker.delete_retired_tasks()

    assert list(LogRecord.objects.values_list("instance", flat=True)) == [kept.pk]
    assert list(Response.objects.values_list("instance", flat=True)) == [kept.pk]
    kept.refresh_from_db()
    assert kept.parent_id is None


@override_settings(ATP={"CLEANUP_BATCH_SIZE": 2})
def test_retention_sweep_works_through_all_batches(kept_a_minute):
    tasks = [_ended(kept_a_minute, Status.FINISHED, 61) for _ in range(5)]

    done = tracker.delete_retired_tasks()

    assert sorted(entry.task_id for entry in done) == sorted(task.pk for task in tasks)
    assert not TaskInstance.objects.exists()


def test_nothing_retired_returns_an_empty_list(kept_a_minute):
    _ended(kept_a_minute, Status.FINISHED, 1)
    assert tracker.delete_retired_tasks() == []
    assert TaskInstance.objects.count() == 1


@pytest.fixture(params=["statement", "orm"])
def delete_path(request, monkeypatch):
    """Both ways a retired batch is deleted: PostgreSQL's one statement (unless a receiver
    listens to the tasks' delete signals) and the ORM's cascade (SQLite, or a receiver)."""
    if request.param == "orm":

        def receiver(sender, **kwargs):
            pass

        signals.post_delete.connect(receiver, sender=TaskInstance)
        yield "orm"
        signals.post_delete.disconnect(receiver, sender=TaskInstance)
    else:
        yield "statement" if connection.vendor == "postgresql" else "orm"


def test_both_delete_paths_apply_every_on_delete_rule(kept_a_minute, delete_path):
    forever = tracker.register_task_type("forever", "tests.support.handlers.noop")
    retired = _ended(kept_a_minute, Status.FINISHED, 61)
    retired_too = _ended(kept_a_minute, Status.FINISHED, 61)
    kept = _ended(forever, Status.FINISHED, 61)
    waiting = TaskInstanceFactory(type=forever, status=Status.BLOCKED)
    Dependency.objects.create(task=waiting, depends_on=retired, position=0)  # cleared
    Dependency.objects.create(task=retired, depends_on=kept, position=0)  # goes with retired
    Dependency.objects.create(task=retired_too, depends_on=retired, position=0)  # both go
    flow = Workflow.objects.create(name="flow", end_task=retired)
    other_flow = Workflow.objects.create(name="other", end_task=kept)

    with CaptureQueriesContext(connection) as queries:
        done = tracker.delete_retired_tasks()

    statements = [query["sql"] for query in queries.captured_queries]
    in_one = [text for text in statements if "DELETE FROM atp_taskinstance AS t" in text]
    assert len(in_one) == (1 if delete_path == "statement" else 0)
    assert sorted(entry.task_id for entry in done) == sorted([retired.pk, retired_too.pk])
    edges = Dependency.objects.values_list("task_id", "depends_on_id")
    assert list(edges) == [(waiting.pk, None)]
    flow.refresh_from_db()
    other_flow.refresh_from_db()
    assert flow.end_task_id is None and other_flow.end_task_id == kept.pk


@override_settings(ATP={"CLEANUP_BATCH_SIZE": 3})
def test_every_batch_of_both_paths_is_found_past_the_last(kept_a_minute, delete_path):
    tasks = [_ended(kept_a_minute, Status.FINISHED, 61) for _ in range(4)]
    kept = _ended(kept_a_minute, Status.FINISHED, 1)  # between retired ids: never deleted
    tasks += [_ended(kept_a_minute, Status.FAILED, 61) for _ in range(4)]
    progress = []

    done = tracker.delete_retired_tasks(progress=progress.append)

    assert [entry.task_id for entry in done] == sorted(task.pk for task in tasks)
    assert progress == [3, 6, 8]
    assert list(TaskInstance.objects.values_list("pk", flat=True)) == [kept.pk]
