"""Claiming due tasks for a daemon: ACCEPTED → SCHEDULED, or straight on to RUNNING."""

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from atp import events, sql, validation
from atp.exceptions import QueueEmpty
from atp.models import LogRecord, Status, TaskInstance
from atp.tracker import batch_sql, concurrency, pausing, pending, ratelimit
from atp.tracker.core import Attempt, _attempt_of, _ended, _lineage, _log

logger = logging.getLogger("atp.tracker")


def dequeue_task(server_id, message="", *, limit=1, queues=None) -> list[int]:
    """Claim up to ``limit`` due tasks for daemon ``server_id`` (SCHEDULED) and return their ids.

    Tasks are taken by priority (highest first), then ``run_after``, then id. On PostgreSQL
    the rows are locked with ``FOR UPDATE SKIP LOCKED``, so concurrent daemons claim
    different tasks without waiting on each other; on SQLite the write transaction is
    serialised. Expired tasks met on the way are revoked instead of claimed. A type with a
    ``rate_limit`` is claimed at most that often across all daemons (``atp.tracker.ratelimit``);
    its tasks wait while its window is full; so do those whose concurrency key is full
    (``atp.tracker.concurrency``) and those of a paused queue or type
    (``atp.tracker.pausing``). Raises QueueEmpty when no task is due.
    """
    tasks = _take(server_id, message, limit, queues, start=False)
    if not tasks:
        raise QueueEmpty("no task is ready to run")
    logger.debug("Daemon %s claimed %s", server_id, [task.pk for task in tasks])
    return [task.pk for task in tasks]


def claim_tasks(
    server_id,
    message="",
    *,
    limit=1,
    queues=None,
    limited=None,
    paused_queues=None,
    exclude_types=(),
) -> list[Attempt]:
    """Claim up to ``limit`` due tasks and start them at once; return their attempts.

    ``dequeue_task`` and ``begin_attempt`` in one transaction and three statements for the
    whole batch (lock, update, log), for a daemon that starts what it claims right away:
    each task moves ACCEPTED → SCHEDULED → RUNNING, with both transitions logged. Same
    order, rate limits and expiry rules as ``dequeue_task``; an empty list when none is due.
    ``limited`` caps how many tasks of concurrency-limited types it takes (None: no cap);
    the daemon passes its idle slots, so such a task never waits behind other work in a
    slot's queue while it holds a place of its key. ``paused_queues`` are the queues the
    caller knows to be paused (the daemon keeps them, see ``atp.tracker.pausing``); None
    reads them from the database now.

    On PostgreSQL the plain tasks are claimed by one statement (``batch_sql.claim``); when
    it passed over due tasks it may not judge (expired tasks, rate-limited types), the ORM
    path looks again in the same transaction and judges them; the tasks it claims come
    last in the list, whatever their priority, but in the same batch.

    ``exclude_types`` (task type ids) are left out: the daemon holds back a type whose
    claim fails with an error (``atp.daemon.containment``).
    """
    server_id = validation.identifier(str(server_id), "server_id")
    limit = validation.integer(limit, "limit", minimum=1)
    limited = validation.integer(limited, "limited", minimum=0, allow_none=True)
    if not sql.is_postgresql():
        tasks = _take(
            server_id,
            message,
            limit,
            queues,
            start=True,
            limited=limited,
            exclude_types=exclude_types,
        )
        return [_attempt_of(task) for task in tasks]
    # No savepoint inside the caller's transaction (the daemon's loop): see finish_tasks.
    with transaction.atomic(savepoint=False):
        if paused_queues is None:
            paused_queues = pausing.paused_queues()
        attempts, skipped = batch_sql.claim(
            server_id, message, limit, queues, timezone.now(), paused_queues, exclude_types
        )
        if skipped:
            rest = _take(
                server_id,
                message,
                limit - len(attempts),
                queues,
                start=True,
                limited=limited,
                exclude_types=exclude_types,
            )
            attempts += [_attempt_of(task) for task in rest]
    return attempts


def _take(
    server_id, message, limit, queues, *, start, limited=None, exclude_types=()
) -> list[TaskInstance]:
    server_id = validation.identifier(str(server_id), "server_id")
    limit = validation.integer(limit, "limit", minimum=1)
    claimed: list[TaskInstance] = []
    rate_limited = set(exclude_types)  # and types without room in their rate-limit window now
    full_keys: set = set()  # (type id, concurrency key) pairs without a free place now
    passed: list = []  # (task, reason) of the tasks passed over for a full key or rate
    with transaction.atomic():
        now = timezone.now()
        pauses = pausing.current()
        while len(claimed) < limit:
            ready = pausing.unpaused(TaskInstance.objects.ready(now), pauses)
            ready = ready.exclude(type_id__in=rate_limited)
            if full_keys:
                ready = ready.exclude(concurrency.of_keys(full_keys))
            if limited is not None and limited <= 0:  # no idle slot left for limited types
                ready = ready.filter(type__concurrency_limit__isnull=True)
            if queues:
                ready = ready.filter(queue__in=list(queues))
            rows = list(
                ready.select_for_update(skip_locked=True, of=("self",)).select_related("type")[
                    : limit - len(claimed)
                ]
            )
            if not rows:
                break
            expired = [task for task in rows if task.expires is not None and task.expires <= now]
            judged = [task for task in rows if task not in expired]
            fresh, full, rate_busy = ratelimit.admit(judged, now)
            within_rate = fresh
            fresh, keys_full, out_of_places, keys_busy = concurrency.admit(fresh, limited)
            passed += _passed_over(
                judged, within_rate, fresh, full - rate_busy, keys_full - keys_busy
            )
            rate_limited |= full
            full_keys |= keys_full
            if limited is not None:
                limited -= sum(task.type.concurrency_limit is not None for task in fresh)
            _revoke_expired(expired, now)
            _claim(fresh, server_id, message, now, start)
            claimed.extend(fresh)
            if not expired and not full and not keys_full and not out_of_places:
                break
        pending.passed_over(passed, now)
    return claimed


def _passed_over(judged, within_rate, admitted, rate_full, keys_full) -> list[tuple]:
    """Why each task of ``judged`` not claimed was passed over: ``(task, reason)`` pairs.

    A task left out only because the daemon had no idle slot for a limited type (the
    budget) is not waiting for anything of its own, so it gets no pair.
    """
    admitted_ids = {task.pk for task in admitted}
    rate_ok_ids = {task.pk for task in within_rate}
    passed = []
    for task in judged:
        if task.pk in admitted_ids:
            continue
        if task.pk not in rate_ok_ids:
            if task.type_id in rate_full:
                passed.append((task, "rate"))
        elif (task.type_id, task.concurrency_key) in keys_full:
            passed.append((task, "concurrency"))
    return passed


def _claim(tasks, server_id, message, now, start) -> None:
    """Mark locked tasks claimed by ``server_id`` (and started, if ``start``), with their logs."""
    if not tasks:
        return
    values = {
        "status": Status.SCHEDULED,
        "server_id": server_id,
        "received_at": now,
        "updated_at": now,
    }
    if start:
        values.update(status=Status.RUNNING, started_at=now, attempts=F("attempts") + 1)
    TaskInstance.objects.filter(pk__in=[task.pk for task in tasks]).update(**values)
    records = []
    for task in tasks:
        task.server_id, task.received_at, task.status = server_id, now, Status.SCHEDULED
        records.append(
            _log(
                task,
                Status.SCHEDULED,
                message,
                events.TASK_RECEIVED,
                now,
                **events.call_fields(task),
                **_lineage(task),
                server_id=server_id,
            )
        )
        if start:
            task.status, task.started_at, task.attempts = Status.RUNNING, now, task.attempts + 1
            records.append(_log(task, Status.RUNNING, message, events.TASK_STARTED, now))
    LogRecord.objects.bulk_create(records)


def _revoke_expired(tasks, now) -> None:
    if not tasks:
        return
    TaskInstance.objects.filter(pk__in=[task.pk for task in tasks]).update(
        status=Status.REVOKED, finished_at=now, updated_at=now
    )
    LogRecord.objects.bulk_create(
        _log(
            task,
            Status.REVOKED,
            f"Expired at {task.expires.isoformat()} before it could run.",
            events.TASK_REVOKED,
            now,
            **events.revoked_fields(terminated=False, signum=None, expired=True),
        )
        for task in tasks
    )
    for task in tasks:
        task.status = Status.REVOKED
        _ended(task)
        logger.info("Revoked %s: expired before it could run", task)
