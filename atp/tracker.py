"""The process tracker: registering types, queueing tasks and moving them through statuses.

This is the only module that changes a task's status. Every change is one transaction that
validates the transition against ``models.TRANSITIONS`` and writes exactly one LogRecord
(with its Celery event), so a crash never leaves a half-made change behind.

Writes made on behalf of a running attempt may pass ``attempt=`` (the attempt number that
``begin_attempt`` returned). It is a fencing token: once the task was given up (re-enqueued,
claimed again, restarted) the old attempt's writes raise ``StaleAttempt`` instead of
overwriting the new attempt's state.
"""

import logging
import uuid as uuid_module
from collections import namedtuple
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone

from atp import events, ratelimit, sql, validation
from atp.conf import settings
from atp.exceptions import (
    DuplicateTask,
    InvalidInput,
    InvalidTransition,
    QueueEmpty,
    QueueFull,
    StaleAttempt,
    TaskNotFound,
    UnknownTaskType,
)
from atp.models import (
    TERMINAL,
    LogRecord,
    Response,
    Status,
    TaskInstance,
    TaskType,
    Worker,
    sources_of,
)

logger = logging.getLogger("atp.tracker")

#: ``get_task_info`` result: the seed's (type, identifier, status, status name) tuple.
TaskInfo = namedtuple("TaskInfo", "type identifier status status_name")
#: ``get_task_status`` result.
StatusInfo = namedtuple("StatusInfo", "status status_name")
#: One task a sweep acted on; unpacks like the seed's ``(id, "type::identifier")`` pairs.
SweepEntry = namedtuple("SweepEntry", "task_id name action")
#: One entry of ``get_task_log``: ``(time, (status, status_name), message)``.
LogEntry = namedtuple("LogEntry", "time status message")

#: Options ``register_task_type`` accepts besides its named parameters, with their checks.
TYPE_OPTIONS = {
    "priority": lambda v: validation.integer(v, "priority"),
    "queue": lambda v: validation.identifier(v, "queue"),
    "max_queue_size": lambda v: validation.integer(v, "max_queue_size", minimum=1, allow_none=True),
    "max_retries": lambda v: validation.integer(v, "max_retries", minimum=0),
    "retry_backoff": lambda v: validation.number(v, "retry_backoff", minimum=0),
    "retry_backoff_max": lambda v: validation.number(v, "retry_backoff_max", minimum=0),
    "rate_limit": validation.rate,
    "soft_time_limit": lambda v: validation.number(
        v, "soft_time_limit", minimum=0, exclusive=True, allow_none=True
    ),
    "hard_time_limit": lambda v: validation.number(
        v, "hard_time_limit", minimum=0, exclusive=True, allow_none=True
    ),
    "options": lambda v: _options_dict(v),
}
#: Options ``enqueue_task`` accepts.
ENQUEUE_OPTIONS = ("priority", "queue", "run_after", "eta", "countdown", "expires", "parent")


def _options_dict(value):
    if not isinstance(value, dict):
        raise InvalidInput(f"options must be a dict, not {value!r}")
    return validation.json_input(value, "task type options")


@dataclass(frozen=True)
class Attempt:
    """A started attempt: what a worker needs to run it, and its fencing token."""

    task_id: int
    number: int
    type: str
    identifier: str
    handler: str
    input: object
    soft_time_limit: float | None
    hard_time_limit: float | None
    timeout: float

    @property
    def time_limit(self) -> float:
        """Seconds the daemon lets the handler run before killing it."""
        return self.hard_time_limit or self.timeout


# --- task types -------------------------------------------------------------------------


def register_task_type(identifier, handler, timeout=3600, timeret=-1, maxrestart=2, **options):
    """Create or update a task type (an upsert), checking every value first.

    Parameters: ``identifier`` (≤64 characters), ``handler`` (dotted path of a callable
    ``handler(task_status, input)``, imported now so a typo fails here, not in a worker),
    ``timeout`` (seconds without update before a task is a zombie, > 0), ``timeret`` (seconds
    ended tasks are kept; ≤0 keeps them forever), ``maxrestart`` (restarts before a task
    fails), and the options of ``TYPE_OPTIONS``. Options not given take their defaults, so
    the call describes the whole type. Returns the TaskType.
    """
    identifier, values = clean_task_type(
        identifier, handler, timeout, timeret, maxrestart, **options
    )
    task_type, created = TaskType.objects.update_or_create(identifier=identifier, defaults=values)
    logger.info(
        "%s task type %s -> %s", "Registered" if created else "Updated", identifier, handler
    )
    return task_type


def clean_task_type(identifier, handler, timeout=3600, timeret=-1, maxrestart=2, **options):
    """Check a task type's values as ``register_task_type`` does, without saving anything.

    Returns ``(identifier, field values)``; raises InvalidInput naming the bad value. The
    admin's task type form validates through this too, so both paths accept the same values.
    """
    identifier = validation.identifier(identifier, "task type identifier")
    handler = validation.handler_path(handler, identifier)
    timeout = validation.number(timeout, "timeout", minimum=0, exclusive=True)
    timeret = validation.number(timeret, "timeret")
    maxrestart = validation.integer(maxrestart, "maxrestart", minimum=0)
    unknown = set(options) - set(TYPE_OPTIONS)
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {sorted(unknown)} for task type {identifier!r}; "
            f"valid options: {sorted(TYPE_OPTIONS)}"
        )
    values = {
        field.name: field.get_default()
        for field in TaskType._meta.concrete_fields
        if field.name in TYPE_OPTIONS
    }
    values.update({name: TYPE_OPTIONS[name](value) for name, value in options.items()})
    values.update(
        handler=handler,
        timeout=timeout,
        timeret=timeret if timeret > 0 else -1.0,
        maxrestart=maxrestart,
    )
    return identifier, values


def unregister_task_type(identifier, force=False):
    """Delete a task type; with ``force``, delete its tasks (and their logs) first.

    Raises UnknownTaskType, or InvalidInput when tasks exist and ``force`` is false.
    """
    with transaction.atomic():
        task_type = _get_type(identifier)
        count = task_type.instances.count()
        if count and not force:
            raise InvalidInput(
                f"task type {identifier!r} still has {count} task(s); "
                "pass force=True to delete them with it"
            )
        task_type.instances.all().delete()
        task_type.delete()
    logger.info("Unregistered task type %s (%d task(s) deleted)", identifier, count)


def update_task_type(identifier, **options) -> TaskType:
    """Change some options of a registered task type (for example ``rate_limit``), leaving
    the others as they are; values are checked as ``register_task_type`` checks them.

    Raises UnknownTaskType or InvalidInput.
    """
    unknown = set(options) - set(TYPE_OPTIONS)
    if unknown:
        raise InvalidInput(f"unknown option(s) {sorted(unknown)}; valid: {sorted(TYPE_OPTIONS)}")
    values = {name: TYPE_OPTIONS[name](value) for name, value in options.items()}
    with transaction.atomic():
        task_type = _get_type(identifier)
        for name, value in values.items():
            setattr(task_type, name, value)
        task_type.save(update_fields=[*values, "updated_at"])
    logger.info("Updated task type %s: %s", task_type.identifier, values)
    return task_type


def _get_type(identifier) -> TaskType:
    if isinstance(identifier, TaskType):
        return identifier
    try:
        return TaskType.objects.get(identifier=identifier)
    except TaskType.DoesNotExist:
        raise UnknownTaskType(
            f"unknown task type {identifier!r}; register it with register_task_type() first"
        ) from None


# --- queue size -------------------------------------------------------------------------


def get_queue_size(type=None) -> int:
    """Number of waiting (ACCEPTED) tasks, of all types or of task type ``type``."""
    tasks = TaskInstance.objects.waiting()
    if type is not None:
        tasks = tasks.filter(type=_get_type(type))
    return tasks.count()


def get_max_queue_size(type=None) -> int | None:
    """The waiting-task limit that applies to ``type`` (or the shared one); None = no limit.

    A type with its own ``max_queue_size`` counts only its own waiting tasks against it;
    all other types share ``ATP['MAX_QUEUE_SIZE']``.
    """
    if type is not None:
        task_type = _get_type(type)
        if task_type.max_queue_size is not None:
            return task_type.max_queue_size
    return settings.MAX_QUEUE_SIZE


def _check_queue_limit(task_type: TaskType, adding: int = 1) -> None:
    """Raise QueueFull unless ``adding`` more waiting tasks fit; call inside the transaction."""
    limit = get_max_queue_size(task_type)
    if limit is None:
        return
    if task_type.max_queue_size is not None:
        scope_id, scope = task_type.pk, TaskInstance.objects.filter(type=task_type)
        scope_name = f"task type {task_type.identifier!r}"
    else:
        scope_id = 0
        scope = TaskInstance.objects.filter(type__max_queue_size__isnull=True)
        scope_name = "the shared queue"
    sql.lock_queue_scope(scope_id)
    # Counting at most ``limit`` rows keeps the check cheap however long the queue is.
    waiting = scope.waiting().order_by()[:limit].count()
    if waiting + adding > limit:
        raise QueueFull(
            f"cannot enqueue {adding} task(s) of type {task_type.identifier!r}: {scope_name} "
            f"holds {waiting} waiting task(s), its limit is {limit}; retry later or raise "
            "the limit (ATP['MAX_QUEUE_SIZE'] or the type's max_queue_size)"
        )


# --- reading tasks ----------------------------------------------------------------------


def _get_task(task_id, *, lock=False) -> TaskInstance:
    tasks = TaskInstance.objects.select_related("type")
    if lock:
        # of=("self",): lock the task row only, never its (shared, hot) task type row.
        tasks = tasks.select_for_update(of=("self",))
    try:
        return tasks.get(pk=task_id)
    except (TaskInstance.DoesNotExist, ValueError, TypeError):
        raise TaskNotFound(f"no task with id {task_id!r}") from None


def _get_task_by_identifier(type, identifier) -> TaskInstance:
    task_type = _get_type(type)
    try:
        return TaskInstance.objects.select_related("type").get(
            type=task_type, identifier=identifier
        )
    except TaskInstance.DoesNotExist:
        raise TaskNotFound(f"no task {task_type.identifier}::{identifier}") from None


def get_task_info(task_id) -> TaskInfo:
    """Return ``(type identifier, task identifier, status, status name)`` of a task."""
    task = _get_task(task_id)
    return TaskInfo(task.type.identifier, task.identifier, task.status, task.status_name)


def get_task_identifier(task_id) -> str:
    """Return a task's identifier."""
    return _get_task(task_id).identifier


def get_task_status(task_id) -> StatusInfo:
    """Return ``(status, status name)`` of a task."""
    task = _get_task(task_id)
    return StatusInfo(task.status, task.status_name)


def get_task_status_by_identifier(type, identifier) -> StatusInfo:
    """Return ``(status, status name)`` of the task ``identifier`` of task type ``type``."""
    task = _get_task_by_identifier(type, identifier)
    return StatusInfo(task.status, task.status_name)


def get_task_response(type, identifier) -> tuple[bytes, str]:
    """Return ``(data, mime type)`` that the task's handler stored."""
    task = _get_task_by_identifier(type, identifier)
    try:
        response = task.response
    except Response.DoesNotExist:
        raise TaskNotFound(f"task {task} has no response (yet)") from None
    return bytes(response.data), response.mime_type


def get_task_log(type, identifier) -> list[LogEntry]:
    """Return the task's history, oldest first, as ``(time, (status, name), message)``."""
    task = _get_task_by_identifier(type, identifier)
    return [
        LogEntry(
            record.time, StatusInfo(record.status, Status(record.status).label), record.message
        )
        for record in task.log.order_by("time", "id")
    ]


# --- deleting tasks ---------------------------------------------------------------------


def delete_task(task_id) -> bool:
    """Delete a task with its log and response; a missing task is a no-op (returns False)."""
    try:
        deleted, _ = TaskInstance.objects.filter(pk=task_id).delete()
    except (ValueError, TypeError):  # not an id at all: no such task either
        return False
    return bool(deleted)


def delete_task_by_identifier(type, identifier) -> bool:
    """Delete the task ``identifier`` of ``type``; unknown type raises, missing task is a no-op."""
    deleted, _ = TaskInstance.objects.filter(type=_get_type(type), identifier=identifier).delete()
    return bool(deleted)


# --- the log ----------------------------------------------------------------------------


def _log(task, status, message, event, moment, **fields) -> LogRecord:
    """Build (unsaved) the LogRecord of one transition, with its Celery event.

    Every caller saves it in the transition's transaction; its signals fire on commit.
    """
    record = LogRecord(
        instance=task,
        time=moment,
        status=status,
        message=message,
        event=event,
        fields=events.task_fields(task, moment, **fields),
    )
    events.signal_on_commit(record)
    return record


# --- enqueue ----------------------------------------------------------------------------


def enqueue_task(type, identifier=None, input=None, message="", **options) -> int:
    """Put a new task in the queue (ACCEPTED) and return its id.

    Parameters: ``type`` (task type identifier), ``identifier`` (≤64 characters, unique per
    type; a UUID when None), ``input`` (JSON-serialisable), ``message`` (for the log), and
    options ``priority`` (higher first; default the type's), ``queue``, ``run_after``/``eta``
    (datetime) or ``countdown`` (seconds), ``expires`` (datetime or seconds from now; an
    expired task is revoked, not run) and ``parent`` (task id).

    Raises UnknownTaskType, InvalidInput, DuplicateTask, or QueueFull when the type's queue
    already holds its limit of waiting tasks. The limit check and the insert are atomic.
    """
    task_type = _get_type(type)
    task_uuid = uuid_module.uuid4()
    identifier = str(task_uuid) if identifier is None else validation.identifier(identifier)
    where = f"task {task_type.identifier}::{identifier}"
    validation.json_input(input, where)
    fields = _enqueue_fields(task_type, options, where)
    try:
        with transaction.atomic():
            _check_queue_limit(task_type)
            now = timezone.now()
            task = TaskInstance.objects.create(
                type=task_type,
                identifier=identifier,
                uuid=task_uuid,
                status=Status.ACCEPTED,
                input=input,
                enqueued_at=now,
                updated_at=now,
                **{"run_after": now, **fields},
            )
            _log(
                task,
                Status.ACCEPTED,
                message,
                events.TASK_SENT,
                now,
                **events.call_fields(task),
                **_lineage(task),
            ).save()
            sql.notify_enqueued(task.queue)
    except IntegrityError as exc:
        if TaskInstance.objects.filter(type=task_type, identifier=identifier).exists():
            raise DuplicateTask(
                f"{where} already exists; choose another identifier or delete the old task"
            ) from exc
        raise
    logger.debug("Enqueued %s (id %d)", where, task.pk)
    return task.pk


def enqueue_tasks(type, items, message="", *, check_limit=True, **options) -> list[int]:
    """Enqueue many tasks of one type in one transaction; return their ids in order.

    ``items`` are ``(identifier, input)`` pairs (identifier None = a UUID); options as for
    ``enqueue_task`` apply to all. The queue limit is checked once for the whole batch,
    atomically with the insert: either every task is enqueued or none (QueueFull,
    DuplicateTask, InvalidInput). ``check_limit=False`` skips the limit (used for the
    subtasks of an admitted parent, see ``atp.subtasks``).
    """
    task_type = _get_type(type)
    fields = _enqueue_fields(task_type, options, f"tasks of type {task_type.identifier}")
    tasks = []
    for identifier, task_input in items:
        task_uuid = uuid_module.uuid4()
        identifier = str(task_uuid) if identifier is None else validation.identifier(identifier)
        validation.json_input(task_input, f"task {task_type.identifier}::{identifier}")
        tasks.append(
            TaskInstance(
                type=task_type,
                identifier=identifier,
                uuid=task_uuid,
                status=Status.ACCEPTED,
                input=task_input,
                **fields,
            )
        )
    identifiers = [task.identifier for task in tasks]
    if len(set(identifiers)) != len(identifiers):
        raise DuplicateTask(f"the batch for type {task_type.identifier!r} repeats an identifier")
    if not tasks:
        return []
    try:
        with transaction.atomic():
            if check_limit:
                _check_queue_limit(task_type, adding=len(tasks))
            now = timezone.now()
            for task in tasks:
                task.enqueued_at = task.updated_at = now
                task.run_after = fields.get("run_after", now)
            TaskInstance.objects.bulk_create(tasks)
            LogRecord.objects.bulk_create(
                _log(
                    task,
                    Status.ACCEPTED,
                    message,
                    events.TASK_SENT,
                    now,
                    **events.call_fields(task),
                    **_lineage(task),
                )
                for task in tasks
            )
            sql.notify_enqueued(tasks[0].queue)
    except IntegrityError as exc:
        raise DuplicateTask(
            f"a task of type {task_type.identifier!r} in the batch already exists; "
            "nothing was enqueued"
        ) from exc
    logger.debug("Enqueued %d task(s) of %s", len(tasks), task_type.identifier)
    return [task.pk for task in tasks]


def _enqueue_fields(task_type: TaskType, options: dict, where: str) -> dict:
    """Check ``enqueue_task``'s options and turn them into TaskInstance field values."""
    unknown = set(options) - set(ENQUEUE_OPTIONS)
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {sorted(unknown)} for {where}; valid: {list(ENQUEUE_OPTIONS)}"
        )
    if sum(options.get(name) is not None for name in ("run_after", "eta", "countdown")) > 1:
        raise InvalidInput(f"give at most one of run_after, eta and countdown for {where}")
    now = timezone.now()
    fields = {
        "priority": validation.integer(options.get("priority", task_type.priority), "priority"),
        "queue": validation.identifier(options.get("queue") or task_type.queue, "queue"),
    }
    if options.get("countdown") is not None:
        validation.number(options["countdown"], "countdown", minimum=0)
    run_after = validation.moment(
        options.get("run_after") or options.get("eta") or options.get("countdown"),
        "run_after",
        now,
    )
    if run_after is not None:
        fields["run_after"] = run_after
    fields["expires"] = validation.moment(options.get("expires"), "expires", now)
    if options.get("parent") is not None:
        fields["parent"] = _get_task(options["parent"])
    return fields


def _lineage(task: TaskInstance) -> dict:
    """Celery's ``root_id`` and ``parent_id`` of a task: its top ancestor and its parent."""
    if task.parent_id is None:
        return {"root_id": str(task.uuid), "parent_id": None}
    parent, root = task.parent, task.parent
    while root.parent_id is not None:
        root = root.parent
    return {"root_id": str(root.uuid), "parent_id": str(parent.uuid)}


def reenqueue_task(
    task_id, message="", *, attempt=None, run_after=None, retry=False, exception=None, traceback=""
) -> None:
    """Put a claimed, running or paused task back in the queue (ACCEPTED).

    The queue limit does not apply (the task was already admitted). ``run_after`` delays it;
    ``retry=True`` counts it as a retry (``retries`` + 1) rather than a restart.
    ``exception``/``traceback`` go into the ``task-retried`` event (default: the message).
    """
    now = timezone.now()
    _transition(
        task_id,
        Status.ACCEPTED,
        message,
        attempt=attempt,
        event=events.TASK_RETRIED,
        changes=lambda task: {
            "server_id": "",
            "run_after": run_after or now,
            "retries": task.retries + (1 if retry else 0),
        },
        fields=lambda task, moment: {
            "exception": exception if exception is not None else message,
            "traceback": traceback,
        },
    )


# --- claiming ---------------------------------------------------------------------------


def dequeue_task(server_id, message="", *, limit=1, queues=None) -> list[int]:
    """Claim up to ``limit`` due tasks for daemon ``server_id`` (SCHEDULED) and return their ids.

    Tasks are taken by priority (highest first), then ``run_after``, then id. On PostgreSQL
    the rows are locked with ``FOR UPDATE SKIP LOCKED``, so concurrent daemons claim
    different tasks without waiting on each other; on SQLite the write transaction is
    serialised. Expired tasks met on the way are revoked instead of claimed. A type with a
    ``rate_limit`` is claimed at most that often across all daemons (``atp.ratelimit``);
    its tasks wait while its window is full. Raises QueueEmpty when no task is due.
    """
    tasks = _take(server_id, message, limit, queues, start=False)
    if not tasks:
        raise QueueEmpty("no task is ready to run")
    logger.debug("Daemon %s claimed %s", server_id, [task.pk for task in tasks])
    return [task.pk for task in tasks]


def claim_tasks(server_id, message="", *, limit=1, queues=None) -> list[Attempt]:
    """Claim up to ``limit`` due tasks and start them at once; return their attempts.

    ``dequeue_task`` and ``begin_attempt`` in one transaction and three statements for the
    whole batch (lock, update, log), for a daemon that starts what it claims right away:
    each task moves ACCEPTED → SCHEDULED → RUNNING, with both transitions logged. Same
    order, rate limits and expiry rules as ``dequeue_task``; an empty list when none is due.
    """
    return [_attempt_of(task) for task in _take(server_id, message, limit, queues, start=True)]


def _take(server_id, message, limit, queues, *, start) -> list[TaskInstance]:
    server_id = validation.identifier(str(server_id), "server_id")
    limit = validation.integer(limit, "limit", minimum=1)
    claimed: list[TaskInstance] = []
    rate_limited: set[int] = set()  # types without room in their rate-limit window now
    with transaction.atomic():
        now = timezone.now()
        while len(claimed) < limit:
            ready = TaskInstance.objects.ready(now).exclude(type_id__in=rate_limited)
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
            fresh, full = ratelimit.admit([task for task in rows if task not in expired], now)
            rate_limited |= full
            _revoke_expired(expired, now)
            _claim(fresh, server_id, message, now, start)
            claimed.extend(fresh)
            if not expired and not full:
                break
    return claimed


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


def _attempt_of(task: TaskInstance) -> Attempt:
    """The Attempt a worker needs to run ``task``'s current (just started) attempt."""
    return Attempt(
        task_id=task.pk,
        number=task.attempts,
        type=task.type.identifier,
        identifier=task.identifier,
        handler=task.type.handler,
        input=task.input,
        soft_time_limit=task.type.soft_time_limit,
        hard_time_limit=task.type.hard_time_limit,
        timeout=task.type.timeout,
    )


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


def _ended(task: TaskInstance) -> None:
    """The one hook every terminal transition calls, inside its transaction.

    A subtask's end is counted into its parent here (``atp.subtasks``), so the count
    commits with the status, exactly once.
    """
    if task.parent_id is not None:
        from atp import subtasks  # atp.subtasks imports this module

        subtasks.subtask_ended(task)


# --- transitions ------------------------------------------------------------------------


def _transition(
    task_id,
    target,
    message,
    *,
    attempt=None,
    server_id=None,
    event=None,
    changes=None,
    fields=None,
    sources=None,
) -> TaskInstance:
    """Move one task to ``target`` in one transaction, or raise and change nothing.

    The task row is locked (``SELECT … FOR UPDATE``) so the status read, the check and the
    write cannot interleave with another process's transition of the same task.
    ``changes(task)`` returns extra field values; ``fields(task, moment)`` extra event fields.
    """
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, server_id)
        allowed = sources if sources is not None else sources_of(target)
        if task.status not in allowed:
            names = ", ".join(Status(source).label for source in sorted(allowed))
            raise InvalidTransition(
                f"task {task} (id {task.pk}) is {task.status_name}; it cannot become "
                f"{Status(target).label} (only from {names})"
            )
        moment = timezone.now()
        values = changes(task) if changes else {}
        event_fields = fields(task, moment) if fields else {}
        if task.abort_requested_at is not None and target in (Status.FINISHED, Status.FAILED):
            # An aborted task's handler stopped (or ended anyway): the abort wins, whatever
            # the handler reported. Checked here, under the row lock, so it costs no query.
            target, event, event_fields = (
                Status.REVOKED,
                events.TASK_REVOKED,
                {
                    "terminated": False,
                    "signum": None,
                    "expired": False,
                },
            )
            message = _join("Aborted on request.", message)
        values.update(status=target, updated_at=moment)
        if target in TERMINAL:
            values["finished_at"] = moment
        for name, value in values.items():
            setattr(task, name, value)
        task.save(update_fields=list(values))
        event = event or events.EVENT_FOR_STATUS[target]
        _log(task, target, message, event, moment, **event_fields).save()
        if target in TERMINAL:
            _ended(task)
    logger.debug(
        "%s %s: %s%s", task, Status(target).label, event, f" ({message})" if message else ""
    )
    return task


def _check_owner(task, attempt, server_id) -> None:
    """Raise StaleAttempt if the caller's attempt or claim is no longer the task's current one."""
    if server_id is not None and task.server_id != str(server_id):
        raise StaleAttempt(
            f"task {task} (id {task.pk}) is not claimed by daemon {server_id} "
            f"(claimed by {task.server_id or 'nobody'}); it was given up and claimed again"
        )
    if attempt is None:
        return
    # An ended task still fences off older attempts (else a lost worker could overwrite the
    # response of the attempt that finished it); its own last attempt gets InvalidTransition.
    if task.status in TERMINAL and task.attempts == attempt:
        return
    if task.attempts != attempt or task.status not in (
        Status.RUNNING,
        Status.PAUSED,
        Status.WAITING,
    ):
        raise StaleAttempt(
            f"attempt {attempt} of task {task} (id {task.pk}) is over: the task is "
            f"{task.status_name} at attempt {task.attempts}; this worker must stop writing to it"
        )


def begin_attempt(task_id, message="", *, server_id=None) -> Attempt:
    """Start a claimed task (SCHEDULED → RUNNING), count the attempt and return it.

    ``server_id``, when given, must be the daemon that claimed the task (else StaleAttempt).
    """
    task = _transition(
        task_id,
        Status.RUNNING,
        message,
        server_id=server_id,
        sources={Status.SCHEDULED},
        event=events.TASK_STARTED,
        changes=lambda task: {"attempts": task.attempts + 1, "started_at": timezone.now()},
    )
    return _attempt_of(task)


def start_task(task_id, message="", *, server_id=None):
    """Start a claimed task (SCHEDULED → RUNNING), count the attempt, and return its input."""
    return begin_attempt(task_id, message, server_id=server_id).input


def stop_task_success(task_id, message="", *, attempt=None, result=None, result_repr=None):
    """End a task as FINISHED.

    ``result`` is the handler's return value; the event stores its repr (Celery's
    ``result``). A worker that has only the repr (it crossed a process pipe) passes
    ``result_repr`` instead.
    """
    _finish(task_id, message, attempt, _repr_of(result, result_repr))


def _repr_of(result, result_repr) -> str:
    return result_repr if result_repr is not None else repr(result)


def _finish(task_id, message, attempt, result_repr, sources=None) -> None:
    _transition(
        task_id,
        Status.FINISHED,
        message,
        attempt=attempt,
        sources=sources,
        fields=lambda task, moment: {
            "result": result_repr,
            "runtime": events.runtime_of(task, moment),
        },
    )


def stop_task_success_if_not_finished(
    task_id, message="", *, attempt=None, result=None, result_repr=None
) -> bool:
    """End a RUNNING or PAUSED task as FINISHED; leave any other status alone.

    This is what a worker calls after a handler returns: a handler that already ended its
    task, re-enqueued it (retry) or handed it to its subtasks (WAITING) keeps that status.
    Returns whether the task was changed.
    """
    try:
        # Not WAITING: such a task ends when its subtasks do, not when its handler returns.
        _finish(
            task_id,
            message,
            attempt,
            _repr_of(result, result_repr),
            sources={Status.RUNNING, Status.PAUSED},
        )
    except InvalidTransition:
        return False
    return True


def finish_tasks(successes) -> dict[int, str]:
    """End many tasks whose handlers returned, as FINISHED, in one transaction.

    ``successes`` are ``(task_id, attempt, result_repr)`` triples. Each gets the rules of
    ``stop_task_success_if_not_finished``; the batch costs three statements (lock, update,
    log) instead of three per task. Returns ``{task_id: "finished" | "revoked" |
    "unchanged" | "lost"}`` ("lost": the attempt is stale; nothing written for it).
    """
    successes = list(successes)
    outcome: dict[int, str] = {}
    with transaction.atomic():
        locked = (
            TaskInstance.objects.select_for_update(of=("self",))
            .select_related("type")
            .filter(pk__in=[task_id for task_id, _, _ in successes])
            .order_by("pk")  # one lock order for every batch: no deadlock between batches
        )
        tasks = {task.pk: task for task in locked}
        done = []
        for task_id, attempt, result_repr in successes:
            task = tasks.get(task_id)
            try:
                if task is not None:
                    _check_owner(task, attempt, None)
            except StaleAttempt:
                outcome[task_id] = "lost"
                continue
            if task is None or task.status not in (Status.RUNNING, Status.PAUSED):
                outcome[task_id] = "unchanged"
            elif task.abort_requested_at is not None:  # the abort wins: the one-task path
                _finish(task_id, "", attempt, result_repr, sources={task.status})
                outcome[task_id] = "revoked"
            else:
                done.append((task, result_repr))
        if done:
            now = timezone.now()
            TaskInstance.objects.filter(pk__in=[task.pk for task, _ in done]).update(
                status=Status.FINISHED, finished_at=now, updated_at=now
            )
            records = []
            for task, result_repr in done:
                runtime = events.runtime_of(task, now)
                task.status, task.finished_at, task.updated_at = Status.FINISHED, now, now
                records.append(
                    _log(
                        task,
                        Status.FINISHED,
                        "",
                        events.TASK_SUCCEEDED,
                        now,
                        result=result_repr,
                        runtime=runtime,
                    )
                )
                outcome[task.pk] = "finished"
            LogRecord.objects.bulk_create(records)
            for task, _ in done:
                _ended(task)
    return outcome


def stop_task_failure(task_id, message="", *, attempt=None, exception=None, traceback="") -> None:
    """End a task as FAILED, recording the exception's repr and traceback in its event."""
    _transition(
        task_id,
        Status.FAILED,
        message,
        attempt=attempt,
        fields=lambda task, moment: {
            "exception": exception if exception is not None else message,
            "traceback": traceback,
        },
    )


def pause_task(task_id, message="", *, attempt=None) -> None:
    """Pause a running task (RUNNING → PAUSED)."""
    _transition(task_id, Status.PAUSED, message, attempt=attempt)


def resume_task(task_id, message="", *, attempt=None) -> None:
    """Resume a paused task (PAUSED → RUNNING); sends ``task-resumed``, not ``task-started``."""
    _transition(
        task_id,
        Status.RUNNING,
        message,
        attempt=attempt,
        sources={Status.PAUSED},
        event=events.TASK_RESUMED,
    )


def wait_for_subtasks(task_id, message="", *, attempt=None) -> None:
    """Mark a task whose handler returned as waiting for its subtasks (RUNNING → WAITING)."""
    _transition(task_id, Status.WAITING, message, attempt=attempt)


def revoke_task(task_id, message="", *, terminated=False, signum=None, expired=False) -> None:
    """Cancel a task that has not ended (→ REVOKED); a waiting one will never run."""
    _transition(
        task_id,
        Status.REVOKED,
        message,
        fields=lambda task, moment: events.revoked_fields(terminated, signum, expired),
    )


def heartbeat(task_id, *, attempt=None) -> None:
    """Tell the zombie sweep a running task is alive (refreshes ``updated_at``).

    Raises StaleAttempt when the attempt was given up, so a worker learns it lost the task.
    """
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        if task.status in TERMINAL:
            raise InvalidTransition(f"task {task} (id {task.pk}) has ended ({task.status_name})")
        task.updated_at = timezone.now()
        task.save(update_fields=["updated_at"])


# --- responses --------------------------------------------------------------------------


def set_task_response(task_id, response, mime_type="text/xml", *, attempt=None) -> None:
    """Store (or replace) a task's response: bytes, or text stored as UTF-8, and its MIME type."""
    if isinstance(response, str):
        response = response.encode("utf-8")
    if not isinstance(response, bytes | bytearray | memoryview):
        raise InvalidInput(f"a response must be bytes or str, not {type(response).__name__}")
    if not isinstance(mime_type, str) or "/" not in mime_type:
        raise InvalidInput(f"mime_type must look like 'type/subtype', not {mime_type!r}")
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        # update_or_create sets both fields on update too (the seed's update path wrote
        # ``mineType`` and so never changed the MIME type).
        Response.objects.update_or_create(
            instance=task, defaults={"data": bytes(response), "mime_type": mime_type}
        )


# --- sweeps -----------------------------------------------------------------------------


def reenqueue_zombie_tasks(message="") -> list[SweepEntry]:
    """Recover tasks whose daemon stopped caring for them; return what was done.

    Two passes, each in short transactions that skip rows another sweeper holds:
    claims not started within ``ATP['CLAIM_TIMEOUT']`` go back to the queue without using
    up a restart; SCHEDULED/RUNNING/PAUSED tasks not updated for their type's ``timeout``
    (and not owned by a live daemon, which enforces its own time limits) are re-enqueued,
    or FAILED once they have used ``maxrestart`` restarts.
    """
    now = timezone.now()

    def unstarted(task):
        age = (now - task.updated_at).total_seconds()
        return f"Claimed by {task.server_id} {age:.0f} s ago and never started."

    def stale(task):
        return f"No update for {task.type.timeout:g} s."

    done = []
    for tasks, reason, exception in (
        (TaskInstance.objects.unstarted(now, settings.CLAIM_TIMEOUT), unstarted, "claim timed out"),
        (TaskInstance.objects.stale(now, settings.WORKER_TIMEOUT), stale, "TimeoutError"),
    ):
        done += _sweep_batches(
            tasks,
            lambda task, reason=reason, exception=exception: SweepEntry(
                task.pk,
                str(task),
                restart_or_fail(task.pk, _join(message, reason(task)), exception=exception),
            ),
        )
    return done


def _join(*parts) -> str:
    return " ".join(part for part in parts if part)


def _sweep_batches(queryset, act) -> list[SweepEntry]:
    """Run ``act(task)`` on locked rows of ``queryset``, a batch per transaction."""
    done: list[SweepEntry] = []
    batch_size = settings.CLEANUP_BATCH_SIZE
    while True:
        with transaction.atomic():
            batch = list(
                queryset.select_for_update(skip_locked=True, of=("self",))
                .select_related("type")
                .order_by("pk")[:batch_size]
            )
            done += [act(task) for task in batch]
        if len(batch) < batch_size:
            return done


def restart_or_fail(task_id, reason, *, attempt=None, exception="TimeoutError") -> str:
    """Re-enqueue a task whose attempt was lost, or fail it once its restarts are used up.

    The one rule for every lost attempt (zombie timeout, hard time limit, crashed handler
    process, lost daemon): a claim never started goes back without using a restart; a
    started attempt uses one of the type's ``maxrestart`` restarts, and with none left the
    task ends FAILED with ``reason`` and a note saying so. Returns "reenqueued" or "failed".
    """
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        restarts_used = task.attempts - task.retries - 1
        fields = lambda task, moment: {"exception": exception, "traceback": ""}  # noqa: E731
        if task.status != Status.SCHEDULED and restarts_used >= task.type.maxrestart:
            note = (
                f"Failed on attempt {task.attempts}: its {task.type.maxrestart} restart(s) "
                "(maxrestart) are used up."
            )
            _transition(task.pk, Status.FAILED, _join(reason, note), fields=fields)
            logger.warning("%s failed after %d attempt(s): %s", task, task.attempts, reason)
            return "failed"
        if task.status == Status.SCHEDULED:
            note = "Given back to the queue (it never started; no restart used)."
        else:
            note = f"Re-enqueued: restart {restarts_used + 1} of {task.type.maxrestart}."
        _transition(
            task.pk,
            Status.ACCEPTED,
            _join(reason, note),
            event=events.TASK_RETRIED,
            changes=lambda task: {"server_id": "", "run_after": timezone.now()},
            fields=fields,
        )
        logger.warning("%s re-enqueued (attempt %d): %s", task, task.attempts, reason)
        return "reenqueued"


def touch_active_tasks(server_id) -> int:
    """Refresh ``updated_at`` of the tasks daemon ``server_id`` owns (its heartbeat).

    A live daemon vouches for its tasks, so the timeout-based zombie sweep only catches
    tasks whose daemon stopped beating (the seed re-enqueued long handlers while they ran).
    """
    return TaskInstance.objects.claimed_by(server_id).update(updated_at=timezone.now())


def recover_lost_workers(worker_timeout, message="") -> list[SweepEntry]:
    """Re-enqueue (or fail) the tasks of daemons whose heartbeat is older than ``worker_timeout``.

    Each lost daemon is handled by one recoverer: its Worker row is locked with SKIP LOCKED
    and marked stopped in the same transaction as its tasks' transitions.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=worker_timeout)
    done: list[SweepEntry] = []
    for worker_pk in Worker.objects.lost(cutoff).values_list("pk", flat=True):
        with transaction.atomic():
            worker = (
                Worker.objects.select_for_update(skip_locked=True)
                .lost(cutoff)
                .filter(pk=worker_pk)
                .first()
            )
            if worker is None:
                continue  # another daemon is recovering it, or it came back
            silence = (now - worker.heartbeat_at).total_seconds()
            reason = _join(
                message,
                f"Daemon {worker.server_id} (pid {worker.pid} on {worker.hostname}) lost: "
                f"no heartbeat for {silence:.0f} s.",
            )
            worker.stopped_at = now
            worker.save(update_fields=["stopped_at"])
            for task in (
                TaskInstance.objects.claimed_by(worker.server_id)
                .select_for_update(of=("self",))
                .select_related("type")
                .order_by("pk")
            ):
                action = restart_or_fail(task.pk, reason, exception="WorkerLostError")
                done.append(SweepEntry(task.pk, str(task), action))
        logger.warning("%s: recovered %d task(s)", reason, len(done))
    return done


def delete_retired_tasks() -> list[SweepEntry]:
    """Delete ended tasks older than their type's ``timeret``, in batches; return them."""
    done: list[SweepEntry] = []
    batch_size = settings.CLEANUP_BATCH_SIZE
    while True:
        with transaction.atomic():
            batch = list(
                TaskInstance.objects.retired()
                .select_for_update(skip_locked=True, of=("self",))
                .select_related("type")
                .order_by("pk")[:batch_size]
            )
            TaskInstance.objects.filter(pk__in=[task.pk for task in batch]).delete()
        done += [SweepEntry(task.pk, str(task), "deleted") for task in batch]
        if len(batch) < batch_size:
            break
    if done:
        logger.info("Deleted %d retired task(s)", len(done))
    return done


def count_by_status() -> dict[str, int]:
    """Number of tasks per status name (all statuses present, zeros included)."""
    counts = dict(TaskInstance.objects.order_by().values_list("status").annotate(n=Count("id")))
    return {status.label: counts.get(status.value, 0) for status in Status}


def set_task_progress(task_id, done, total=None, message="", *, attempt=None) -> dict:
    """Record a running task's progress (``done`` of ``total``) and send ``task-progress``.

    Progress is not a transition: the status stays, the log gets one record, and
    ``updated_at`` moves (so reporting progress also keeps the zombie sweep away).
    """
    done = validation.number(done, "done", minimum=0)
    total = validation.number(total, "total", minimum=0, allow_none=True)
    progress = {
        "done": done,
        "total": total,
        "percent": round(100.0 * done / total, 2) if total else None,
        "message": message,
    }
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        if task.status not in (Status.RUNNING, Status.PAUSED):
            raise InvalidTransition(
                f"task {task} (id {task.pk}) is {task.status_name}; only a RUNNING or PAUSED "
                "task reports progress"
            )
        moment = timezone.now()
        task.progress, task.updated_at = progress, moment
        task.save(update_fields=["progress", "updated_at"])
        _log(task, task.status, message, events.TASK_PROGRESS, moment, progress=progress).save()
    return progress


# --- operator requests (admin) ----------------------------------------------------------
# Kept apart so they can be unified with atp/control.py (revoke(terminate=True), abort)
# at merge: both only set the request fields the owning daemon / the handler act on.


def request_kill(task_id, signum, message="") -> None:
    """Ask the daemon that runs a task to kill its handler with ``signum``.

    Only a RUNNING or PAUSED task has a handler to kill; the owning daemon sees
    ``kill_signal``, kills the handler and revokes the task (``terminated=True``). The
    request is noted in the task's log (no Celery event: Celery sends none for requests).
    Raises InvalidTransition for any other status.
    """
    signum = validation.integer(signum, "signum", minimum=1)
    _request(
        task_id,
        {Status.RUNNING, Status.PAUSED},
        {"kill_signal": signum},
        message or f"Termination requested (signal {signum}).",
    )


def request_abort(task_id, message="") -> None:
    """Ask a task's handler to stop: sets ``abort_requested_at``, which it polls.

    Only a task that has not ended can be aborted; raises InvalidTransition otherwise.
    """
    _request(
        task_id,
        sources_of(Status.REVOKED),
        {"abort_requested_at": timezone.now()},
        message or "Abort requested.",
    )


def _request(task_id, sources, values, message) -> None:
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        if task.status not in sources:
            raise InvalidTransition(
                f"task {task} (id {task.pk}) is {task.status_name}; {message.rstrip('.')} "
                "is only possible while it is "
                + ", ".join(Status(source).label for source in sorted(sources))
            )
        for name, value in values.items():
            setattr(task, name, value)
        task.save(update_fields=list(values))
        LogRecord.objects.create(instance=task, status=task.status, message=message)
