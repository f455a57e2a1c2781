"""Enqueueing's two paths write the same thing: one task or a batch, SQL or ORM.

On PostgreSQL an enqueue is one prepared statement in one round trip (``atp.sql``), with the
task type taken from a per-process cache that the statement re-checks; elsewhere it goes
through the ORM. These tests pin that the rows, the events and the signals do not depend on
the path, and that the cache and the prepared statements recover from what can go stale.
"""

import select
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from atp import events, sql, tracker
from atp.exceptions import DuplicateTask, QueueFull, UnknownTaskType
from atp.models import LogRecord, Status, TaskInstance, TaskType
from atp.sql import driver
from atp.sql import enqueue as enqueue_sql
from atp.tracker import queueing
from tests.conftest import ON_POSTGRES
from tests.support.helpers import nothing_written

pytestmark = pytest.mark.django_db

#: Values that differ between any two tasks (or moments), whatever the path.
OWN_COLUMNS = {"id", "identifier", "uuid", "enqueued_at", "updated_at", "run_after", "expires"}
OWN_FIELDS = {"uuid", "identifier", "root_id", "timestamp", "eta", "expires"}


def _row(task_id) -> dict:
    """Every column of the task but its own, and its task-sent record's fields but its own;
    the ``task-pending`` records that follow it (a task due later), without their times."""
    task = TaskInstance.objects.get(pk=task_id)
    columns = {
        field.attname: getattr(task, field.attname)
        for field in TaskInstance._meta.concrete_fields
        if field.attname not in OWN_COLUMNS
    }
    record = LogRecord.objects.get(instance_id=task_id, event=events.TASK_SENT)
    sent = {name: value for name, value in record.fields.items() if name not in OWN_FIELDS}
    waits = LogRecord.objects.filter(instance_id=task_id).exclude(pk=record.pk).order_by("id")
    for wait in waits:
        assert wait.pk > record.pk and wait.time == record.time
        assert wait.fields["uuid"] == record.fields["uuid"]
        assert wait.fields["eta"] == task.run_after.isoformat()
    assert record.fields["uuid"] == str(task.uuid)
    assert record.fields["timestamp"] == record.time.timestamp()
    assert record.fields["eta"] == task.run_after.isoformat()
    assert record.fields["expires"] == (task.expires.isoformat() if task.expires else None)
    assert task.enqueued_at == task.updated_at == record.time
    return {
        "columns": columns,
        "record": (record.status, record.message, record.event),
        "fields": sent,
        "waits": [
            (wait.status, wait.message.split(" at ")[0], wait.event, wait.fields["reason"])
            for wait in waits
        ],
    }


INPUTS = [None, {"a": [1, 2.5], "b": None}, [1, "two"], "text", 3, 1.5, True, (4, 5)]
OPTIONS = [
    {},
    {"priority": 7, "queue": "other"},
    {"countdown": 60, "expires": 3600},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_a_batch_writes_what_one_by_one_writes(task_type, options):
    alone = [
        tracker.enqueue_task(task_type.identifier, f"one-{n}", value, "msg", **options)
        for n, value in enumerate(INPUTS)
    ]
    batch = tracker.enqueue_tasks(
        task_type.identifier,
        [(f"many-{n}", value) for n, value in enumerate(INPUTS)],
        "msg",
        **options,
    )
    assert [_row(task_id) for task_id in batch] == [_row(task_id) for task_id in alone]


def test_subtasks_carry_their_lineage_on_both_paths(task_type):
    root = tracker.enqueue_task(task_type.identifier, "root")
    child = tracker.enqueue_task(task_type.identifier, "child", parent=root)
    alone = tracker.enqueue_task(task_type.identifier, "alone", parent=child)
    (batch,) = tracker.enqueue_tasks(task_type.identifier, [("batch", None)], parent=child)
    uuids = dict(TaskInstance.objects.values_list("identifier", "uuid"))
    for task_id in (alone, batch):
        fields = LogRecord.objects.get(instance_id=task_id).fields
        assert fields["root_id"] == str(uuids["root"])
        assert fields["parent_id"] == str(uuids["child"])
        assert TaskInstance.objects.get(pk=task_id).parent_id == child
    assert _row(alone) == _row(batch)


@pytest.mark.postgres
@pytest.mark.parametrize("options", OPTIONS)
def test_the_sql_statement_writes_what_the_orm_writes(task_type, options, monkeypatch):
    by_sql = tracker.enqueue_tasks(
        task_type.identifier, [(f"sql-{n}", v) for n, v in enumerate(INPUTS)], "m", **options
    )
    monkeypatch.setattr(sql, "is_postgresql", lambda: False)
    by_orm = tracker.enqueue_tasks(
        task_type.identifier, [(f"orm-{n}", v) for n, v in enumerate(INPUTS)], "m", **options
    )
    assert [_row(task_id) for task_id in by_sql] == [_row(task_id) for task_id in by_orm]


@override_settings(ATP={"MAX_QUEUE_SIZE": None})
def test_ids_come_back_in_the_order_of_the_items(task_type):
    items = [(f"t{n:03}", n) for n in range(200)][::-1]
    ids = tracker.enqueue_tasks(task_type.identifier, items)
    assert [TaskInstance.objects.get(pk=pk).identifier for pk in ids] == [i for i, _ in items]
    assert ids == sorted(ids)


# --- the queue limit --------------------------------------------------------------------


def test_a_limit_larger_than_a_page_holds_exactly(db):
    tracker.register_task_type("wide", "tests.support.handlers.noop", max_queue_size=300)
    assert len(tracker.enqueue_tasks("wide", [(None, None)] * 299)) == 299
    with nothing_written(), pytest.raises(QueueFull, match="holds 299 waiting task"):
        tracker.enqueue_tasks("wide", [(None, None)] * 2)
    tracker.enqueue_task("wide")
    with pytest.raises(QueueFull, match="holds 300 waiting task"):
        tracker.enqueue_task("wide")


@override_settings(ATP={"MAX_QUEUE_SIZE": 3})
def test_the_shared_limit_counts_every_type_that_shares_it(db):
    for identifier in ("a", "b"):
        tracker.register_task_type(identifier, "tests.support.handlers.noop")
    tracker.register_task_type("own", "tests.support.handlers.noop", max_queue_size=10)
    tracker.enqueue_tasks("own", [(None, None)] * 5)
    tracker.enqueue_tasks("a", [(None, None)] * 2)
    tracker.enqueue_task("b")
    with pytest.raises(QueueFull, match="the shared queue holds 3"):
        tracker.enqueue_task("a")


# --- the task type cache ----------------------------------------------------------------


def _enqueued_type(task_id) -> TaskType:
    return TaskInstance.objects.select_related("type").get(pk=task_id).type


def test_a_re_registered_type_applies_at_once(db):
    tracker.register_task_type("kind", "tests.support.handlers.noop", priority=1, queue="q1")
    first = tracker.enqueue_task("kind")
    tracker.register_task_type("kind", "tests.support.handlers.noop", priority=2, queue="q2")
    second = tracker.enqueue_task("kind")
    assert [(t.priority, t.queue) for t in TaskInstance.objects.filter(pk__in=[first, second])] == [
        (2, "q2"),
        (1, "q1"),
    ]
    assert LogRecord.objects.get(instance_id=second).fields["queue"] == "q2"


def test_a_type_changed_behind_the_orms_back_applies_at_once(db):
    """A queryset update sends no signal and leaves updated_at alone; it applies all the same."""
    tracker.register_task_type("kind", "tests.support.handlers.noop")
    tracker.enqueue_task("kind")
    TaskType.objects.filter(identifier="kind").update(priority=5, max_queue_size=1)
    with pytest.raises(QueueFull, match="task type 'kind' holds 1"):
        tracker.enqueue_task("kind")
    TaskType.objects.filter(identifier="kind").update(max_queue_size=None)
    assert TaskInstance.objects.get(pk=tracker.enqueue_task("kind")).priority == 5


def test_a_type_deleted_and_registered_again_is_found_anew(db):
    tracker.register_task_type("kind", "tests.support.handlers.noop")
    tracker.enqueue_task("kind")
    tracker.unregister_task_type("kind", force=True)
    with nothing_written(), pytest.raises(UnknownTaskType):
        tracker.enqueue_task("kind")
    with pytest.raises(UnknownTaskType):
        tracker.enqueue_tasks("kind", [(None, None)])
    fresh = tracker.register_task_type("kind", "tests.support.handlers.noop")
    assert _enqueued_type(tracker.enqueue_task("kind")) == fresh
    assert _enqueued_type(tracker.enqueue_tasks("kind", [(None, 1)])[0]) == fresh


@pytest.mark.postgres
def test_a_stale_type_object_passed_in_is_read_again(db):
    """On PostgreSQL a TaskType passed in is checked like a cached one (the ORM path trusts it)."""
    stale = tracker.register_task_type("kind", "tests.support.handlers.noop", priority=1)
    tracker.register_task_type("kind", "tests.support.handlers.noop", priority=9)
    assert TaskInstance.objects.get(pk=tracker.enqueue_task(stale)).priority == 9


@pytest.mark.postgres
def test_a_type_that_keeps_changing_gives_up(task_type, monkeypatch):
    monkeypatch.setattr(sql, "enqueue_rows", lambda *args: [(False, 0, None, None, None)])
    with pytest.raises(UnknownTaskType, match="changed while enqueueing"):
        tracker.enqueue_task(task_type.identifier)


# --- one round trip, outside and inside a transaction -----------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_enqueue_is_one_statement_outside_a_transaction(task_type, django_assert_num_queries):
    tracker.enqueue_task(task_type.identifier)  # caches the type, prepares the statement
    with override_settings(ATP={"MAX_QUEUE_SIZE": None}):
        tracker.enqueue_task(task_type.identifier)  # prepares the statement without a limit
        with django_assert_num_queries(1):
            tracker.enqueue_task(task_type.identifier)
        with django_assert_num_queries(1):
            tracker.enqueue_tasks(task_type.identifier, [(None, None)] * 50)
    # A queue limit adds its advisory lock: a statement of its own, sent in the same
    # execute as the insert (one implicit transaction, one round trip).
    with django_assert_num_queries(1) as queries:
        tracker.enqueue_task(task_type.identifier)
    assert queries.captured_queries[0]["sql"].startswith("SELECT pg_advisory_xact_lock(")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_lock_and_insert_are_statements_of_their_own(
    task_type, django_assert_num_queries
):
    tracker.enqueue_task(task_type.identifier)  # caches the type, prepares the statement
    with transaction.atomic(), django_assert_num_queries(4) as queries:
        tracker.enqueue_task(task_type.identifier)  # SAVEPOINT, lock, insert, RELEASE
    assert "pg_advisory_xact_lock" in queries.captured_queries[1]["sql"]


@pytest.mark.django_db(transaction=True)
def test_errors_outside_a_transaction_write_nothing(task_type):
    tracker.enqueue_task(task_type.identifier, "taken")
    with nothing_written(), pytest.raises(DuplicateTask, match="already exists"):
        tracker.enqueue_task(task_type.identifier, "taken")
    with nothing_written(), pytest.raises(DuplicateTask, match="nothing was enqueued"):
        tracker.enqueue_tasks(task_type.identifier, [("new", 1), ("taken", 2)])
    with override_settings(ATP={"MAX_QUEUE_SIZE": 2}):
        tracker.enqueue_task(task_type.identifier)
        with nothing_written(), pytest.raises(QueueFull):
            tracker.enqueue_task(task_type.identifier)


def test_errors_inside_a_transaction_leave_it_usable(task_type):
    with transaction.atomic():
        tracker.enqueue_task(task_type.identifier, "taken")
        with pytest.raises(DuplicateTask):
            tracker.enqueue_tasks(task_type.identifier, [("new", 1), ("taken", 2)])
        kept = tracker.enqueue_task(task_type.identifier, "after")
    assert TaskInstance.objects.filter(pk=kept).exists()
    assert not TaskInstance.objects.filter(identifier="new").exists()


def _lose_prepared_statements_then_enqueue(task_type):
    tracker.enqueue_task(task_type.identifier)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a pooler's reset or another session may do
    try:
        task_id = tracker.enqueue_task(task_type.identifier)
        assert TaskInstance.objects.filter(pk=task_id).exists()
        assert enqueue_sql._prepared[connection.connection] is None  # plain SQL from now on
        assert len(tracker.enqueue_tasks(task_type.identifier, [(None, None)] * 3)) == 3
    finally:
        enqueue_sql._prepared.pop(connection.connection)


@pytest.mark.postgres
def test_lost_prepared_statements_fall_back_to_plain_sql_in_a_transaction(task_type):
    _lose_prepared_statements_then_enqueue(task_type)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_lost_prepared_statements_fall_back_to_plain_sql_in_autocommit(task_type):
    _lose_prepared_statements_then_enqueue(task_type)


# --- signals ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_batch_signals_each_task_once_after_the_commit(task_type):
    seen = []

    def listener(sender, event, fields, record, **kwargs):
        seen.append((event, fields, record))

    events.task_sent.connect(listener)
    try:
        with transaction.atomic():
            ids = tracker.enqueue_tasks(
                task_type.identifier, [("a", {"x": 1}), ("b", [2])], "why", priority=3
            )
            assert seen == []
        with pytest.raises(RuntimeError), transaction.atomic():
            tracker.enqueue_tasks(task_type.identifier, [("c", None)])
            raise RuntimeError
    finally:
        events.task_sent.disconnect(listener)
    assert [record.instance_id for _, _, record in seen] == ids
    for event, fields, record in seen:
        stored = LogRecord.objects.get(instance_id=record.instance_id)
        assert (event, fields, record.pk) == (events.TASK_SENT, stored.fields, stored.pk)
        assert (record.message, record.time, record.status) == ("why", stored.time, 1)
        task = TaskInstance.objects.get(pk=record.instance_id)
        assert (record.instance.uuid, record.instance.input) == (task.uuid, task.input)
        assert (record.instance.priority, record.instance.status) == (3, Status.ACCEPTED)


def test_the_cache_is_only_used_on_postgresql(task_type):
    tracker.enqueue_task(task_type.identifier)
    assert (task_type.identifier in queueing._type_cache) == ON_POSTGRES


def test_run_after_given_or_now(task_type):
    later = timezone.now() + timedelta(hours=1)
    ids = tracker.enqueue_tasks(task_type.identifier, [(None, 1), (None, 2)], run_after=later)
    assert {TaskInstance.objects.get(pk=pk).run_after for pk in ids} == {later}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_enqueue_notifies_its_queue_once_and_a_refused_one_not_at_all(task_type):
    listener = connection.get_new_connection(connection.get_connection_params())
    listener.autocommit = True
    try:
        listener.cursor().execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
        tracker.enqueue_tasks(task_type.identifier, [(None, None)] * 3, queue="images")
        with override_settings(ATP={"MAX_QUEUE_SIZE": 3}), pytest.raises(QueueFull):
            tracker.enqueue_task(task_type.identifier)
        payloads, deadline = [], time.monotonic() + 5
        while not payloads and time.monotonic() < deadline:
            select.select([listener], [], [], 0.1)
            payloads += driver.take_notifications(listener)
        time.sleep(0.2)  # a second notification, if any, would have arrived by now
        payloads += driver.take_notifications(listener)
        assert payloads == ["images"]
    finally:
        listener.close()
