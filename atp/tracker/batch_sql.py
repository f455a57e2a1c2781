"""The daemon's two batch calls on PostgreSQL: claim-and-start and finish, one statement each.

``claim_tasks`` and ``finish_tasks`` run once per daemon loop, for dozens of tasks at a
time. Through the ORM each costs a locking SELECT, an UPDATE, a bulk INSERT of log
records and a model instance per row; here each is one ``UPDATE … RETURNING`` plus one
multi-row INSERT, with plain tuples in between. Only the common case takes this path; a
row that needs the tracker's judgement (an expired task, a rate- or concurrency-limited
type, a subtask, an abort request, a stale attempt) is left untouched by the statement and
goes through the ORM path, so every rule keeps exactly one implementation that decides it.
The statements are ``atp.sql.claim``, ``atp.sql.finish`` and ``atp.sql.log_records``; this
module runs them and turns their rows into attempts and log records.
"""

import contextlib
import json
import threading
from datetime import datetime
from typing import Any

from django.db import connection

from atp import events
from atp.models import CLAIM_ORDER, Status
from atp.sql.claim import claim_statement
from atp.sql.finish import FINISH
from atp.sql.log_records import INSERT_LOG
from atp.text import dumps_storable
from atp.tracker.core import Attempt


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
    statement, filters = claim_statement(CLAIM_ORDER, queues, paused_queues, exclude_types)
    params.update(filters)
    with connection.cursor() as cursor:
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


#: The log records held back by ``batched_log_records`` (per thread: per connection).
_held = threading.local()


class HeldLogRecords:
    """The log records of a ``batched_log_records`` block; ``insert`` writes them."""

    def __init__(self):
        self.records: list = []

    def insert(self) -> None:
        """Insert the records held so far, in one statement, in the order they came."""
        records, self.records = self.records, []
        if records:
            _insert_now(records)


@contextlib.contextmanager
def batched_log_records(hold: bool = True):
    """Hold back the batch statements' log records inside; they are inserted in one statement
    by the handle's ``insert`` (or, at the latest, when the block ends without an error).

    The daemon's loop finishes one batch and claims the next in one transaction; each half
    writes its log records, and a round trip per half is a sixth of the loop's. Use it
    inside the transaction (the records must be inserted before it commits). Records keep
    their order, so a task's events keep theirs; nothing in the block reads them back.
    Never hold records across a savepoint that may roll back (``hold=False``: the block
    changes nothing): a held record would outlive the change it logs.
    """
    held = HeldLogRecords()
    if not hold:
        yield held
        return
    if getattr(_held, "current", None) is not None:
        raise RuntimeError("batched_log_records blocks do not nest")
    _held.current = held
    try:
        yield held
    finally:
        _held.current = None
    held.insert()


def insert_log(records) -> None:
    """Insert ``(task_id, time, status, message, event, fields)`` log records in one statement
    (or, inside ``batched_log_records``, at its end).

    The Django signals of each event fire on commit, as for the ORM path (one on-commit
    callback for the batch); the LogRecord objects they carry are built only when someone
    listens.
    """
    if not records:
        return
    held = getattr(_held, "current", None)
    if held is not None:
        held.records.extend(records)
    else:
        _insert_now(records)


def _insert_now(records) -> None:
    # Made storable here as in the ORM path (atp.text): NUL or a lone surrogate in a
    # message or a result repr would make the server refuse the JSON.
    document = dumps_storable(
        [
            [task_id, moment.isoformat(), int(status), message, event, fields]
            for task_id, moment, status, message, event, fields in records
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(INSERT_LOG, [document])
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
