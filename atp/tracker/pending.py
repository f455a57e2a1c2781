"""The ``task-pending`` event: why a waiting task has not started, written when the reason appears.

Waiting is not a transition, so no status change records it. This module writes one event
(``events.TASK_PENDING``; field ``reason``, one of ``REASONS``, plus what it names) at the
moments a reason appears or changes, never once per poll:

- at enqueue, and when a task becomes ACCEPTED again (a retry, a release from its
  dependencies, a prefetched attempt given back), for the reasons known then: due later, its
  queue or type paused, or (BLOCKED) the tasks it depends on;
- when a queue or task type is paused: one event for each task of it waiting then, all in
  one statement (``atp.sql.pending``), so each task's history and Celery's tools say
  why it stopped; the cost is one log record per waiting task, once per pause;
- when a claim passes a task over because its concurrency key or its type's rate limit is
  full: once per task and reason. A claim that meets the task again finds that event still
  the task's latest record and writes nothing, so polling a full key costs one read per
  claim, no write.

A key or rate limit is not judged at enqueue: that would cost every enqueue of a limited
type a count, and the next claim that meets the task judges it anyway.
"""

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from atp import events
from atp.models import LogRecord, QueuePause, Status, TaskInstance
from atp.sql import pending as pending_sql
from atp.text import dumps_storable, storable
from atp.tracker.core import _log

#: The reasons a task waits, as the event's ``reason`` field (and the admin's filter values).
REASONS = ("later", "queue", "type", "concurrency", "rate", "dependencies")


def describe(reason: str, detail: dict) -> str:
    """The log message of a ``task-pending`` event: what holds the task back, in words."""
    if reason == "later":
        return f"Waiting: due later, at {detail['eta']}."
    if reason == "queue":
        return f"Waiting: queue {detail['queue']!r} is paused."
    if reason == "type":
        return f"Waiting: task type {detail['name']!r} is paused."
    if reason == "concurrency":
        key = detail["concurrency_key"]
        shown = "(none)" if key is None else repr(key)
        return f"Waiting: concurrency key {shown} is full ({detail['concurrency_limit']} at once)."
    if reason == "rate":
        return f"Waiting: rate limit {detail['rate_limit']} is used up."
    return f"Waiting for {detail['dependencies']} task(s) it depends on to end."


def record(task: TaskInstance, reason: str, moment, **detail) -> LogRecord:
    """The (unsaved) ``task-pending`` record of ``task`` (type loaded) for ``reason``."""
    return _log(
        task,
        task.status,
        describe(reason, detail),
        events.TASK_PENDING,
        moment,
        reason=reason,
        **detail,
    )


def at_enqueue(tasks: list, now, dependencies: int = 0) -> list[LogRecord]:
    """The records of new tasks that wait from their enqueue (one batch: one type and queue).

    BLOCKED tasks wait for their ``dependencies`` (how many have not ended); ACCEPTED ones
    for what holds now (``reasons_now``). Returns unsaved records, for the enqueue's insert.
    """
    if not tasks:
        return []
    if tasks[0].status == Status.BLOCKED:
        found = [("dependencies", {"dependencies": dependencies})]
    elif tasks[0].status == Status.ACCEPTED:
        found = reasons_now(tasks[0], now)
    else:
        return []
    return [record(task, reason, now, **detail) for task in tasks for reason, detail in found]


def candidates(type_identifier: str, queue: str, run_after, now) -> str:
    """The reasons a new batch may wait for, as JSON for the one-statement enqueue.

    Each is ``{"kind", "message", "fields"}``; "later" only when the batch is due later,
    "queue" and "type" always: the statement checks their pauses in its own snapshot
    (``atp.sql``'s enqueue statement) and logs only those that hold.
    """
    found = [("queue", {"queue": queue}), ("type", {"name": type_identifier})]
    if run_after > now:
        found.insert(0, ("later", {"eta": run_after.isoformat()}))
    stamp = events.stamp_fields(now)
    return dumps_storable(
        [
            {
                "kind": reason,
                "message": describe(reason, detail),
                "fields": {**stamp, "reason": reason, **detail},
            }
            for reason, detail in found
        ]
    )


def signal_inserted(task_ids: list[int], now) -> None:
    """Fire the signals of the ``task-pending`` events an enqueue statement inserted."""
    if task_ids and events.has_listeners(events.TASK_PENDING):
        events.signal_all_on_commit(
            list(
                LogRecord.objects.filter(
                    instance_id__in=task_ids, time=now, event=events.TASK_PENDING
                ).order_by("id")
            )
        )


def reasons_now(task: TaskInstance, now) -> list[tuple[str, dict]]:
    """What holds an ACCEPTED task back at ``now`` that needs no count: time and pauses.

    One read (the queue's pause); the type's pause is a column of the type row it carries.
    """
    found = []
    if task.run_after > now:
        found.append(("later", {"eta": task.run_after.isoformat()}))
    if QueuePause.objects.filter(queue=task.queue).exists():
        found.append(("queue", {"queue": task.queue}))
    if task.type.paused:
        found.append(("type", {"name": task.type.identifier}))
    return found


def after_requeue(task: TaskInstance) -> None:
    """Write the events of ``task``, which just became ACCEPTED again, if it has to wait.

    Call inside the transition's transaction, with the task (and its type) as written.
    """
    if task.status != Status.ACCEPTED:
        return  # a kill request made it REVOKED instead
    now = timezone.now()
    records = [record(task, reason, now, **detail) for reason, detail in reasons_now(task, now)]
    if records:
        LogRecord.objects.bulk_create(records)


def on_pause(now, *, queue: str | None = None, task_type=None) -> int:
    """Write one event for every task waiting in the ``queue`` or ``task_type`` just paused.

    One INSERT … SELECT, in the pause's transaction; returns how many were written.
    """
    if queue is not None:
        reason, detail, where = "queue", {"queue": queue}, {"queue": queue}
    else:
        reason, detail = "type", {"name": task_type.identifier}
        where = {"type_id": task_type.pk}
    fields = {**events.stamp_fields(now), "reason": reason, **detail}
    written = pending_sql.note_paused_tasks(
        where,
        now,
        int(Status.ACCEPTED),
        storable(describe(reason, detail)),
        events.TASK_PENDING,
        dumps_storable(fields),
    )
    if written and events.has_listeners(events.TASK_PENDING):
        events.signal_all_on_commit(
            list(
                LogRecord.objects.filter(
                    time=now, event=events.TASK_PENDING, fields__reason=reason, **_of(where)
                ).order_by("id")
            )
        )
    return written


def _of(where: dict) -> dict:
    return {f"instance__{name}": value for name, value in where.items()}


def passed_over(found: list[tuple[TaskInstance, str]], now) -> None:
    """Write the event of each task a claim passed over, unless it says so already.

    ``found`` holds ``(task, reason)`` pairs, reason "concurrency" or "rate"; a task whose
    latest record is the ``task-pending`` event of the same reason is left alone, so a key
    full for a thousand polls writes one event per task. Call inside the claim's
    transaction (the tasks are locked there).
    """
    if not found:
        return
    latest = LogRecord.objects.filter(instance_id=OuterRef("pk")).order_by("-id").values("pk")
    last = (
        TaskInstance.objects.filter(pk__in=[task.pk for task, _ in found])
        .annotate(last=Subquery(latest[:1]))
        .values("last")
    )
    noted = set(
        LogRecord.objects.filter(pk__in=last, event=events.TASK_PENDING).values_list(
            "instance_id", "fields__reason"
        )
    )
    records = [
        record(task, reason, now, **_detail(task, reason))
        for task, reason in found
        if (task.pk, reason) not in noted
    ]
    if records:
        LogRecord.objects.bulk_create(records)


def _detail(task: TaskInstance, reason: str) -> dict:
    if reason == "rate":
        return {"rate_limit": task.type.rate_limit}
    return {
        "concurrency_key": task.concurrency_key,
        "concurrency_limit": task.type.concurrency_limit,
    }
