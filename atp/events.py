"""Celery's event language for ATP's transitions: event names and their fields.

The tracker stores one event with every transition (``LogRecord.event`` and ``.fields``), so
the history can be replayed into Celery's tools. Field names and value types follow what
Celery's own worker sends: ``args``, ``kwargs`` and ``result`` are repr strings, times are
epoch floats.
"""

import os
import socket
from datetime import datetime

from atp.models import Status

TASK_SENT = "task-sent"
TASK_RECEIVED = "task-received"
TASK_STARTED = "task-started"
TASK_SUCCEEDED = "task-succeeded"
TASK_FAILED = "task-failed"
TASK_RETRIED = "task-retried"
TASK_REVOKED = "task-revoked"
TASK_PAUSED = "task-paused"
TASK_RESUMED = "task-resumed"
TASK_WAITING = "task-waiting"
TASK_PROGRESS = "task-progress"

#: The event a move into each status sends, when the move has a single meaning.
#: RUNNING is ``task-started`` from SCHEDULED but ``task-resumed`` from PAUSED; ACCEPTED is
#: ``task-sent`` on enqueue but ``task-retried`` on a re-enqueue; the tracker picks those.
EVENT_FOR_STATUS = {
    Status.SCHEDULED: TASK_RECEIVED,
    Status.PAUSED: TASK_PAUSED,
    Status.FINISHED: TASK_SUCCEEDED,
    Status.FAILED: TASK_FAILED,
    Status.REVOKED: TASK_REVOKED,
    Status.WAITING: TASK_WAITING,
}


def node_name() -> str:
    """The name this process sends events under, Celery style: ``atp@<host>``."""
    return f"atp@{socket.gethostname()}"


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


def call_signature(task_input) -> tuple[str, str]:
    """Return Celery's ``(args, kwargs)`` reprs for a task's JSON input.

    A JSON object is the keyword arguments, a list the positional ones, any other value a
    single positional argument.
    """
    if isinstance(task_input, dict):
        return "()", repr(task_input)
    if isinstance(task_input, list):
        return repr(tuple(task_input)), "{}"
    if task_input is None:
        return "()", "{}"
    return repr((task_input,)), "{}"


def task_fields(task, moment: datetime, **extra) -> dict:
    """The fields every event of ``task`` carries, plus ``extra``.

    ``task`` is a TaskInstance with its type loaded; ``moment`` the transition's time.
    """
    fields = {
        "uuid": str(task.uuid),
        "timestamp": moment.timestamp(),
        "hostname": node_name(),
        "pid": os.getpid(),
    }
    fields.update(extra)
    return fields


def call_fields(task) -> dict:
    """Fields describing the call itself, sent with ``task-sent`` and ``task-received``."""
    args, kwargs = call_signature(task.input)
    return {
        "name": task.type.identifier,
        "args": args,
        "kwargs": kwargs,
        "retries": task.retries,
        "eta": task.run_after.isoformat() if task.run_after else None,
        "expires": task.expires.isoformat() if task.expires else None,
        "queue": task.queue,
    }


def runtime_of(task, moment: datetime) -> float | None:
    """Seconds between the task's start and ``moment`` (Celery's ``runtime``)."""
    started = _epoch(task.started_at)
    return None if started is None else max(0.0, moment.timestamp() - started)
