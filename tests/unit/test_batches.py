"""The daemon's batch calls, ``claim_tasks`` and ``finish_tasks``, case by case.

On PostgreSQL the plain cases take one-statement paths (``atp.tracker.batch_sql``) and the
others the ORM's; on SQLite everything takes the ORM's. The same expectations hold on
both, so these tests also prove the two paths write the same rows and events.
"""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance
from atp.tracker import batch_sql, subtasks
from atp.tracker.claiming import _take

pytestmark = pytest.mark.django_db

VOLATILE = {"uuid", "identifier", "timestamp", "root_id", "eta"}


def events_of(task_id) -> dict:
    """``{event: fields}`` of a task's log, without the fields that differ per task."""
    return {
        record.event: {k: v for k, v in record.fields.items() if k not in VOLATILE}
        for record in LogRecord.objects.filter(instance_id=task_id)
    }


def test_claim_takes_due_tasks_in_order_and_starts_them(enqueue):
    low = enqueue("low", priority=0)
    high = enqueue("high", {"n": 1}, priority=5)
    later = enqueue("later", countdown=3600)
    attempts = tracker.claim_tasks("server-1", limit=10)
    assert [a.task_id for a in attempts] == [high, low]
    assert [a.number for a in attempts] == [1, 1]
    assert attempts[0].input == {"n": 1} and attempts[0].handler == "tests.support.handlers.noop"
    for task in TaskInstance.objects.filter(pk__in=[high, low]):
        assert (task.status, task.server_id, task.attempts) == (Status.RUNNING, "server-1", 1)
        assert task.received_at == task.started_at is not None
        assert [r.event for r in task.log.order_by("id")] == [
            "task-sent",
            "task-received",
            "task-started",
        ]
    assert TaskInstance.objects.get(pk=later).status == Status.ACCEPTED


def test_claim_respects_limit_and_queues(enqueue):
    ids = [enqueue(f"t{n}") for n in range(3)]
    other = enqueue("other", queue="other")
    assert [a.task_id for a in tracker.claim_tasks("s", limit=2)] == ids[:2]
    assert [a.task_id for a in tracker.claim_tasks("s", limit=5, queues=["other"])] == [other]
    assert tracker.claim_tasks("s", limit=5, queues=["none"]) == []


def test_claim_revokes_expired_and_holds_rate_limited_tasks(enqueue, task_type):
    tracker.register_task_type("test.limited", "tests.support.handlers.noop", rate_limit="1/m")
    expired = enqueue("expired", expires=timezone.now() - timedelta(seconds=1), priority=9)
    limited = [enqueue(f"l{n}", type="test.limited", priority=5) for n in range(2)]
    plain = enqueue("plain")
    claimed = {a.task_id for a in tracker.claim_tasks("s", limit=10)}
    assert claimed == {limited[0], plain}  # one per minute for the limited type
    assert TaskInstance.objects.get(pk=expired).status == Status.REVOKED
    assert TaskInstance.objects.get(pk=limited[1]).status == Status.ACCEPTED


def test_claim_events_match_the_orm_path(enqueue):
    """Both paths store the same task-received and task-started fields (PostgreSQL only)."""
    first = enqueue("a", {"x": [1, 2]}, priority=1)
    second = enqueue("b", {"x": [1, 2]})
    [orm] = _take("server-1", "", 1, None, start=True)
    assert orm.pk == first
    [fast] = (
        batch_sql.claim("server-1", "", 1, None, timezone.now())[0]
        if batch_sql.connection.vendor == "postgresql"
        else [tracker.claim_tasks("server-1")[0]]
    )
    assert fast.task_id == second
    expected = events_of(first)
    assert events_of(second) == expected
    assert expected["task-received"]["kwargs"] == "{'x': [1, 2]}"
    assert expected["task-received"]["server_id"] == "server-1"


def test_claimed_subtask_events_name_parent_and_root(running, task_type):
    parent_id, number = running("parent")
    [child] = subtasks.spawn_subtasks(parent_id, task_type.identifier, [{"i": 1}], attempt=number)
    [attempt] = tracker.claim_tasks("s", limit=5)
    assert attempt.task_id == child
    received = LogRecord.objects.get(instance_id=child, event="task-received").fields
    parent_uuid = str(TaskInstance.objects.get(pk=parent_id).uuid)
    assert received["parent_id"] == received["root_id"] == parent_uuid


def test_finish_ends_plain_tasks_and_logs_success(enqueue):
    ids = [enqueue(f"t{n}") for n in range(3)]
    attempts = tracker.claim_tasks("s", limit=3)
    result = tracker.finish_tasks((a.task_id, a.number, f"'r{a.task_id}'") for a in attempts)
    assert result == dict.fromkeys(ids, "finished")
    for task_id in ids:
        task = TaskInstance.objects.get(pk=task_id)
        assert task.status == Status.FINISHED and task.finished_at is not None
        succeeded = LogRecord.objects.get(instance_id=task_id, event="task-succeeded")
        assert succeeded.status == Status.FINISHED
        assert succeeded.fields["result"] == f"'r{task_id}'"
        assert succeeded.fields["runtime"] >= 0


def test_finish_judges_each_special_case(enqueue, running, task_type):
    plain = enqueue("plain")
    aborted = enqueue("aborted")
    stale = enqueue("stale")
    paused = enqueue("paused")
    attempts = {a.task_id: a for a in tracker.claim_tasks("s", limit=4)}
    tracker.request_abort(aborted)
    tracker.pause_task(paused, attempt=attempts[paused].number)
    tracker.reenqueue_task(stale, "given up", attempt=attempts[stale].number)
    gone = 10**9
    result = tracker.finish_tasks(
        [(task_id, attempts[task_id].number, "None") for task_id in (plain, aborted, stale, paused)]
        + [(gone, 1, "None")]
    )
    assert result == {
        plain: "finished",
        aborted: "revoked",
        stale: "lost",
        paused: "finished",
        gone: "unchanged",
    }
    status = dict(TaskInstance.objects.values_list("id", "status"))
    assert status[aborted] == Status.REVOKED and status[stale] == Status.ACCEPTED
    assert status[paused] == Status.FINISHED
    assert not LogRecord.objects.filter(instance_id=stale, event="task-succeeded").exists()


def test_finishing_subtasks_in_a_batch_ends_their_parent(running, task_type):
    parent_id, number = running("parent")
    children = subtasks.spawn_subtasks(
        parent_id, task_type.identifier, [{"i": i} for i in range(3)], attempt=number
    )
    attempts = tracker.claim_tasks("s", limit=5)
    assert sorted(a.task_id for a in attempts) == sorted(children)
    result = tracker.finish_tasks((a.task_id, a.number, "None") for a in attempts)
    assert result == dict.fromkeys(children, "finished")
    parent = TaskInstance.objects.get(pk=parent_id)
    assert parent.status == Status.FINISHED
    assert parent.progress["succeeded"] == 3 and parent.progress["attempted"] == 3


def test_finish_with_nothing_writes_nothing(db):
    before = LogRecord.objects.count()
    assert tracker.finish_tasks([]) == {}
    assert LogRecord.objects.count() == before


def test_batch_events_fire_their_signals_on_commit(enqueue, django_capture_on_commit_callbacks):
    from atp import events

    seen = []

    def receiver(sender, event, fields, record, **kwargs):
        seen.append((event, record.instance_id, record.pk is not None))

    events.task_event.connect(receiver)
    try:
        ids = [enqueue(f"t{n}") for n in range(2)]
        with django_capture_on_commit_callbacks(execute=True):
            attempts = tracker.claim_tasks("s", limit=2)
            tracker.finish_tasks((a.task_id, a.number, "None") for a in attempts)
            assert seen == []  # nothing before the commit
    finally:
        events.task_event.disconnect(receiver)
    for task_id in ids:
        assert [e for e, t, _ in seen if t == task_id] == [
            "task-received",
            "task-started",
            "task-succeeded",
        ]
    assert all(saved for _, _, saved in seen)


# --- one log insert for a loop's finish and claim (the daemon's batched_log_records) -----


@pytest.mark.postgres
def test_a_loops_finish_and_claim_write_their_log_records_in_one_statement(
    enqueue, django_assert_num_queries
):
    first = enqueue("a")
    second = enqueue("b")
    [attempt] = tracker.claim_tasks("server-1", limit=1)
    with transaction.atomic():
        with tracker.batched_log_records() as log_records:
            with django_assert_num_queries(2):  # finish, claim: no log insert yet
                assert tracker.finish_tasks([(attempt.task_id, 1, "None")]) == {first: "finished"}
                [next_attempt] = tracker.claim_tasks("server-1", limit=1, paused_queues=[])
            assert not LogRecord.objects.filter(event="task-succeeded").exists()
            with django_assert_num_queries(1) as queries:
                log_records.insert()
    assert next_attempt.task_id == second
    assert "INSERT INTO atp_logrecord" in queries.captured_queries[0]["sql"]
    events = LogRecord.objects.order_by("id").values_list("instance_id", "event")
    assert list(events)[-3:] == [
        (first, "task-succeeded"),
        (second, "task-received"),
        (second, "task-started"),
    ]


@pytest.mark.postgres
def test_records_held_by_a_block_that_fails_are_never_written(enqueue):
    enqueue("a")
    before = LogRecord.objects.count()
    with pytest.raises(RuntimeError, match="boom"), transaction.atomic():
        with tracker.batched_log_records():
            tracker.claim_tasks("server-1", limit=1)
            raise RuntimeError("boom")
    assert LogRecord.objects.count() == before
    # The block is over: the next claim writes its records at once.
    enqueue("b")
    assert len(tracker.claim_tasks("server-1", limit=2)) == 2  # "a" again, and "b"
    assert LogRecord.objects.filter(event="task-received").count() == 2


@pytest.mark.postgres
def test_a_block_that_does_not_hold_writes_at_once_and_blocks_do_not_nest(enqueue):
    enqueue("a")
    with transaction.atomic():
        with tracker.batched_log_records(hold=False) as log_records:
            tracker.claim_tasks("server-1", limit=1)
            assert LogRecord.objects.filter(event="task-received").count() == 1
            log_records.insert()  # nothing held: writes nothing more
        assert LogRecord.objects.filter(event="task-received").count() == 1
        with tracker.batched_log_records(), pytest.raises(RuntimeError, match="do not nest"):
            with tracker.batched_log_records():
                pass


@pytest.mark.postgres
def test_log_records_keep_their_order_types_and_unstorable_text(enqueue):
    """One JSON document carries the batch: each column comes back as it went in, in order,
    with NUL and lone surrogates written as visible escapes (as the ORM path stores them)."""
    task_id = enqueue("logged")
    moment = timezone.now()
    records = [
        (task_id, moment, Status.RUNNING, f"line {n}", "task-progress", {"n": n, "x": [n]})
        for n in range(50)
    ]
    records.append((task_id, moment, Status.FAILED, "nul\x00here", "task-failed", {"e": "\ud800"}))
    before = LogRecord.objects.count()
    batch_sql.insert_log(records)
    written = list(LogRecord.objects.order_by("id")[before:])
    assert [(r.message, r.event, r.fields) for r in written[:50]] == [
        (f"line {n}", "task-progress", {"n": n, "x": [n]}) for n in range(50)
    ]
    assert {(r.instance_id, r.time, r.status) for r in written[:50]} == {
        (task_id, moment, Status.RUNNING)
    }
    last = written[50]
    assert (last.message, last.fields, last.status) == (
        "nul\\x00here",
        {"e": "\\ud800"},
        Status.FAILED,
    )
