"""Celery's event language for ATP's transitions: event names and their fields.

The tracker stores one event with every transition (``LogRecord.event`` and ``.fields``), so
the history can be replayed into Celery's tools. Field names and value types follow what
Celery's own worker sends: ``args``, ``kwargs`` and ``result`` are repr strings, times are
epoch floats.
"""

import os
import socket
import time
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.dispatch import Signal

from atp.calls import is_call_input
from atp.models import LogRecord, Status

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
#: Not a transition: why a waiting task has not started (``atp.tracker.pending``), written
#: once when the reason appears. Celery turns an unknown ``task-<x>`` event into the state
#: ``X``, and a custom state outranks RECEIVED and STARTED for good; ``pending`` makes it
#: PENDING, Celery's own state of a waiting task, which every later event replaces.
TASK_PENDING = "task-pending"

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


#: Environment variable holding the daemon's node name. An environment variable, not a
#: contextvar or a global alone: the daemon's pool children (forked from a forkserver) and
#: handler threads must send under their daemon's name too, and both inherit the environment.
NODE_ENV = "ATP_EVENTS_NODE"


def node_name() -> str:
    """The name this process sends events under, Celery style.

    Inside a daemon (and its pool children) that is the daemon's name, set by
    ``set_node_name``; anywhere else (a web request enqueueing) the client's ``atp@<host>``.
    """
    return os.environ.get(NODE_ENV) or f"atp@{socket.gethostname()}"


def daemon_node_name(server_id: str, host: str | None = None) -> str:
    """The Celery hostname of daemon ``server_id``: unique per daemon, ``atpd-<id>@<host>``."""
    return f"atpd-{server_id}@{host or socket.gethostname()}"


def set_node_name(name: str | None) -> None:
    """Make this process (and processes it starts afterwards) send events as ``name``."""
    if name:
        os.environ[NODE_ENV] = name
    else:
        os.environ.pop(NODE_ENV, None)


def utcoffset() -> float:
    """The UTC offset as Celery sends it: hours *west* of UTC (``time.timezone / 3600``).

    A receiver shifts an event's timestamp by the difference to its own offset, so the
    stored value must be the sender's, taken when the event happened.
    """
    return (time.altzone if time.localtime().tm_isdst else time.timezone) / 3600


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


def call_signature(task_input) -> tuple[str, str]:
    """Return Celery's ``(args, kwargs)`` reprs for a task's JSON input.

    A ``@task`` call's input ``{"args": [...], "kwargs": {...}}`` (exactly those two keys)
    gives both; any other JSON object is the keyword arguments, a list the positional
    ones, any other value a single positional argument.
    """
    if is_call_input(task_input):
        return repr(tuple(task_input["args"])), repr(task_input["kwargs"])
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
    return {"uuid": str(task.uuid), **stamp_fields(moment), **extra}


def stamp_fields(moment: datetime) -> dict:
    """The fields every event sent from this process at ``moment`` shares (all but the uuid)."""
    return {
        "timestamp": moment.timestamp(),
        "hostname": node_name(),
        "pid": os.getpid(),
        "utcoffset": utcoffset(),
    }


def call_fields(task) -> dict:
    """Fields describing the call itself, sent with ``task-sent`` and ``task-received``."""
    return call_fields_of(
        task.type.identifier, task.input, task.retries, task.run_after, task.expires, task.queue
    )


def call_fields_of(name, task_input, retries, run_after, expires, queue) -> dict:
    """``call_fields`` from plain values, for callers that hold no TaskInstance."""
    args, kwargs = call_signature(task_input)
    return {
        "name": name,
        "args": args,
        "kwargs": kwargs,
        "retries": retries,
        "eta": run_after.isoformat() if run_after else None,
        "expires": expires.isoformat() if expires else None,
        "queue": queue,
    }


def revoked_fields(terminated: bool, signum: int | None, expired: bool) -> dict:
    """Fields of ``task-revoked``.

    ``state`` is not a Celery field of this event, and it is there on purpose: Celery's
    ``State`` ranks custom states (PAUSED, PROGRESS, WAITING, RESUMED) above REVOKED, so a
    paused task that is revoked would stay PAUSED in Flower forever. A weaker event's fields
    are still copied onto the task (only RECEIVED has merge rules), so ``state`` makes the
    revocation, which is final in ATP, show as REVOKED.
    """
    return {"terminated": terminated, "signum": signum, "expired": expired, "state": "REVOKED"}


def runtime_of(task, moment: datetime) -> float | None:
    """Seconds between the task's start and ``moment`` (Celery's ``runtime``)."""
    started = _epoch(task.started_at)
    return None if started is None else max(0.0, moment.timestamp() - started)


# --- Django signals -----------------------------------------------------------------------

#: Sent (after the transition's transaction commits) for every stored event, whatever its
#: type; keyword arguments ``event`` (the Celery event type), ``fields`` (its fields) and
#: ``record`` (the LogRecord). The sender is the LogRecord class.
task_event = Signal()
#: One signal per event type, with the same arguments, for listeners that want only one.
SIGNALS: dict[str, Signal] = {
    name: Signal()
    for name in (
        TASK_SENT,
        TASK_RECEIVED,
        TASK_STARTED,
        TASK_SUCCEEDED,
        TASK_FAILED,
        TASK_RETRIED,
        TASK_REVOKED,
        TASK_PAUSED,
        TASK_RESUMED,
        TASK_WAITING,
        TASK_PROGRESS,
        TASK_PENDING,
    )
}
task_sent = SIGNALS[TASK_SENT]
task_received = SIGNALS[TASK_RECEIVED]
task_started = SIGNALS[TASK_STARTED]
task_succeeded = SIGNALS[TASK_SUCCEEDED]
task_failed = SIGNALS[TASK_FAILED]
task_retried = SIGNALS[TASK_RETRIED]
task_revoked = SIGNALS[TASK_REVOKED]
task_paused = SIGNALS[TASK_PAUSED]
task_resumed = SIGNALS[TASK_RESUMED]
task_waiting = SIGNALS[TASK_WAITING]
task_progress = SIGNALS[TASK_PROGRESS]
task_pending = SIGNALS[TASK_PENDING]


def signal_on_commit(record: LogRecord) -> None:
    """Fire the signals of ``record``'s event once the current transaction commits.

    Listeners never see an event whose transition was rolled back. Nothing is queued when
    no listener is connected, so the tracker's hot path pays nothing by default.
    """
    if has_listeners(record.event):
        signal_all_on_commit([record])


def has_listeners(event: str | None = None) -> bool:
    """Whether any receiver listens to ``event``'s signals (``task_event`` or its own).

    Without ``event``: whether any receiver listens to any of ATP's event signals.
    """
    if task_event.has_listeners():
        return True
    if event is None:
        return any(signal.has_listeners() for signal in SIGNALS.values())
    specific = SIGNALS.get(event)
    return bool(specific and specific.has_listeners())


def signal_all_on_commit(records: list[LogRecord]) -> None:
    """Fire the signals of every record, in order, once the current transaction commits.

    One callback for a whole batch: a bulk enqueue queues one, not one per task.
    """

    def fire():
        for record in records:
            kwargs = {"event": record.event, "fields": record.fields, "record": record}
            task_event.send(sender=LogRecord, **kwargs)
            specific = SIGNALS.get(record.event)
            if specific is not None:
                specific.send(sender=LogRecord, **kwargs)

    transaction.on_commit(fire)


# --- stored events as Celery sees them ----------------------------------------------------


def celery_event(record: LogRecord) -> dict:
    """The Celery event body of a stored record: its fields plus ``type`` and ``clock``.

    The record's id is the Lamport clock: ids grow in the order the relay publishes them, on
    every daemon alike, so a receiver sees clocks rise whichever daemon relayed.
    """
    body = dict(record.fields)
    body.setdefault("utcoffset", 0)
    body.setdefault("pid", 0)
    body["type"] = record.event
    body["clock"] = record.pk
    return body


def stored_events(start: datetime | None = None, end: datetime | None = None):
    """The stored LogRecords that carry an event, in id order, within ``[start, end)``."""
    records = LogRecord.objects.exclude(event="").order_by("id")
    if start is not None:
        records = records.filter(time__gte=start)
    if end is not None:
        records = records.filter(time__lt=end)
    return records


def state_from_events(start: datetime | None = None, end: datetime | None = None, state=None):
    """Rebuild a ``celery.events.state.State`` from the events stored in ``[start, end)``.

    Unlike a live State (Flower's) it misses nothing: every transition's event is in the
    database. Pass ``state`` to add the events to an existing State. Returns the State.
    Needs Celery (``pip install 'django-atp[redis]'`` or ``[amqp]``).
    """
    try:
        from celery.events.state import State
    except ImportError as exc:
        raise ImproperlyConfigured(
            "state_from_events needs Celery, which is not installed: "
            "pip install 'django-atp[redis]' or 'django-atp[amqp]'"
        ) from exc

    state = state if state is not None else State()
    for record in stored_events(start, end).iterator(chunk_size=2000):
        body = celery_event(record)
        body["local_received"] = body["timestamp"]
        state.event(body)
    return state
