"""The daemon's two batch calls as single PostgreSQL statements: claim-and-start, finish.

``claim_tasks`` and ``finish_tasks`` run once per daemon loop, for dozens of tasks at a
time. Through the ORM each costs a locking SELECT, an UPDATE, a bulk INSERT of log
records and a model instance per row; here each is one ``UPDATE … RETURNING`` plus one
multi-row INSERT, with plain tuples in between. Only the common case takes this path; a
row that needs the tracker's judgement (an expired task, a rate- or concurrency-limited
type, a subtask, an abort request, a stale attempt) is left untouched by the statement and
goes through the ORM path, so every rule keeps exactly one implementation that decides it.
"""

import json
from datetime import datetime
from typing import Any

from django.db import connection

from atp import events
from atp.models import CLAIM_ORDER, Status
from atp.sql import order_by
from atp.text import dumps_storable, storable
from atp.tracker.core import Attempt

#: Claim and start due tasks, in claim order, skipping rows other daemons hold. The
#: candidates are locked first (FOR UPDATE SKIP LOCKED in the CTE); the UPDATE then takes
#: only those without a rate or concurrency limit (counted rules: they need a lock and a
#: count, atp.tracker.concurrency), not expired and not paused. The others stay locked by this
#: transaction and ACCEPTED, for the ORM path to judge in the same transaction. The last
#: column counts the candidates, so the caller knows whether any was left to judge; the
#: LEFT JOIN returns that count (with NULLs) even when nothing was claimed.
CLAIM = """
WITH picked AS (
    SELECT id FROM atp_taskinstance
    WHERE status = %(accepted)s AND run_after <= %(now)s {queue_filter} {type_filter}
    ORDER BY {claim_order}
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE atp_taskinstance AS t
    SET status = %(running)s, server_id = %(server_id)s, received_at = %(now)s,
        started_at = %(now)s, updated_at = %(now)s, attempts = t.attempts + 1
    FROM picked, atp_tasktype AS tt
    WHERE t.id = picked.id AND tt.id = t.type_id AND tt.rate_limit = ''
        AND tt.concurrency_limit IS NULL AND (t.expires IS NULL OR t.expires > %(now)s)
        -- Paused types and queues (atp.tracker.pausing) are left to the ORM path too. Here,
        -- not in "picked": there the planner cannot estimate such a filter and would give
        -- up the claim index for a scan; here it only checks the picked rows. The paused
        -- queues come as constants, and only when there are any: no other table to read.
        AND NOT tt.paused {pause_filter}
    RETURNING t.id, t.uuid, t.identifier, t.input, t.attempts, t.retries, t.priority,
        t.run_after, t.expires, t.queue, t.parent_id,
        tt.identifier AS type_name, tt.handler, tt.soft_time_limit, tt.hard_time_limit,
        tt.timeout
)
SELECT claimed.*, (SELECT count(*) FROM picked) FROM (SELECT 1) AS one
LEFT JOIN claimed ON true
"""

#: End running attempts as FINISHED. Rows are locked in id order first, the order every
#: batch uses, so two batches can never wait on each other in a cycle. Only the plain
#: case is written: the attempt is current, the task runs or is paused, nobody asked to
#: abort or terminate it, it is not a subtask (whose end counts into its parent) and no
#: task depends on it (its end releases them: ``atp.tracker.dependencies``). The conditions
#: are checked on the locked rows (the CTE), never on the table: that keeps the planner
#: on primary-key lookups, where a stale estimate could otherwise send it scanning the
#: partial indexes that the conditions happen to match.
FINISH = """
WITH locked AS (
    SELECT id, attempts, status, abort_requested_at, kill_signal, parent_id, has_dependents
    FROM atp_taskinstance
    WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE
),
plain AS (
    SELECT locked.id, outcome.result FROM locked
    JOIN unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(results)s::text[])
        AS outcome(id, attempt, result)
        ON outcome.id = locked.id AND outcome.attempt = locked.attempts
    WHERE locked.status IN (%(running)s, %(paused)s)
        AND locked.abort_requested_at IS NULL AND locked.kill_signal IS NULL
        AND locked.parent_id IS NULL AND NOT locked.has_dependents
)
UPDATE atp_taskinstance AS t
SET status = %(finished)s, finished_at = %(now)s, updated_at = %(now)s,
    result = plain.result::jsonb
FROM plain
WHERE t.id = plain.id
RETURNING t.id, t.uuid, t.started_at
"""

#: Log records of a batch, one array per column: psycopg2 adapts six lists in C, where a
#: VALUES list would cost a Python-level mogrify per row. ``WITH ORDINALITY`` keeps the
#: rows (and so their ids) in the order given.
INSERT_LOG = """
INSERT INTO atp_logrecord (instance_id, time, status, message, event, fields)
SELECT instance_id, time, status, message, event, fields::jsonb
FROM unnest(%s::bigint[], %s::timestamptz[], %s::smallint[], %s::text[], %s::text[], %s::text[])
    WITH ORDINALITY AS record(instance_id, time, status, message, event, fields, position)
ORDER BY position
RETURNING id
"""


def claim(
    server_id: str,
    message: str,
    limit: int,
    queues,
    now: datetime,
    paused_queues=(),
    exclude_types=(),
):
    """Claim and start up to ``limit`` plain due tasks, none of the ``paused_queues``.

    Returns ``(attempts, skipped)``: the attempts in claim order, and whether the
    statement passed over due tasks it may not judge (expired, rate- or concurrency-limited,
    paused).
    """
    params: dict[str, Any] = {
        "accepted": Status.ACCEPTED,
        "running": Status.RUNNING,
        "server_id": server_id,
        "now": now,
        "limit": limit,
    }
    queue_filter = ""
    if queues:
        queue_filter, params["queues"] = "AND queue = ANY(%(queues)s)", list(queues)
    pause_filter = ""
    if paused_queues:
        pause_filter = "AND t.queue <> ALL (%(paused_queues)s)"
        params["paused_queues"] = list(paused_queues)
    type_filter = ""
    if exclude_types:
        type_filter, params["excluded"] = "AND type_id <> ALL(%(excluded)s)", list(exclude_types)
    with connection.cursor() as cursor:
        statement = CLAIM.format(
            queue_filter=queue_filter,
            type_filter=type_filter,
            claim_order=order_by(CLAIM_ORDER),
            pause_filter=pause_filter,
        )
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    picked = rows[0][-1]
    rows = [row[:-1] for row in rows if row[0] is not None]
    rows.sort(key=lambda row: (-row[6], row[7], row[0]))  # claim order: priority, run_after, id
    lineage = _lineages(rows)
    stamp = events.stamp_fields(now)
    records = []
    attempts = []
    for (task_id, uuid, identifier, data, number, retries, _, run_after, expires, queue,
         _, type_name, handler, soft, hard, timeout) in rows:  # fmt: skip
        data = json.loads(data) if isinstance(data, str) else data
        received = {
            "uuid": str(uuid),
            **stamp,
            **events.call_fields_of(type_name, data, retries, run_after, expires, queue),
            **lineage.get(task_id, {"root_id": str(uuid), "parent_id": None}),
            "server_id": server_id,
        }
        records.append((task_id, now, Status.SCHEDULED, message, events.TASK_RECEIVED, received))
        started = {"uuid": str(uuid), **stamp}
        records.append((task_id, now, Status.RUNNING, message, events.TASK_STARTED, started))
        attempts.append(
            Attempt(task_id, number, type_name, identifier, handler, data, soft, hard, timeout)
        )
    insert_log(records)
    return attempts, picked > len(attempts)


def finish(successes, now: datetime) -> dict[int, str]:
    """End the plain ones of ``(task_id, attempt, result_repr, result_json)`` as FINISHED.

    Returns ``{task_id: "finished"}`` for the tasks written; the others are untouched.
    """
    results = {success[0]: success[2] for success in successes}
    params: dict[str, Any] = {
        "ids": [success[0] for success in successes],
        "attempts": [success[1] for success in successes],
        "results": [success[3] for success in successes],
        "finished": Status.FINISHED,
        "running": Status.RUNNING,
        "paused": Status.PAUSED,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(FINISH, params)
        rows = cursor.fetchall()
    stamp = events.stamp_fields(now)
    records = []
    for task_id, uuid, started_at in rows:
        runtime = None if started_at is None else max(0.0, (now - started_at).total_seconds())
        fields = {"uuid": str(uuid), **stamp, "result": results[task_id], "runtime": runtime}
        records.append((task_id, now, Status.FINISHED, "", events.TASK_SUCCEEDED, fields))
    insert_log(records)
    return {task_id: "finished" for task_id, _, _ in rows}


def insert_log(records) -> None:
    """Insert ``(task_id, time, status, message, event, fields)`` log records in one statement.

    The Django signals of each event fire on commit, as for the ORM path (one on-commit
    callback for the batch); the LogRecord objects they carry are built only when someone
    listens.
    """
    if not records:
        return
    columns = [list(column) for column in zip(*(record[:5] for record in records), strict=True)]
    # Made storable here as in the ORM path (atp.text): NUL or a lone surrogate in a
    # message or a result repr would make psycopg2 raise outside DatabaseError.
    columns[3] = [storable(message) for message in columns[3]]
    columns.append([dumps_storable(record[5]) for record in records])
    with connection.cursor() as cursor:
        cursor.execute(INSERT_LOG, columns)
        rows = cursor.fetchall()
    if events.has_listeners():
        from atp.models import LogRecord

        events.signal_all_on_commit(
            [
                LogRecord(
                    id=record_id,
                    instance_id=task_id,
                    time=moment,
                    status=status,
                    message=message,
                    event=event,
                    fields=fields,
                )
                for (record_id,), (task_id, moment, status, message, event, fields) in zip(
                    rows, records, strict=True
                )
            ]
        )


def _lineages(rows) -> dict[int, dict]:
    """Celery's ``root_id``/``parent_id`` of the claimed subtasks (the rest are their own root)."""
    children = [row[0] for row in rows if row[10] is not None]
    if not children:
        return {}
    from atp.models import TaskInstance
    from atp.tracker.core import _lineage

    return {
        task.pk: _lineage(task)
        for task in TaskInstance.objects.select_related("parent").filter(pk__in=children)
    }
