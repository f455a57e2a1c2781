"""Putting tasks in the queue (ACCEPTED): one task, a batch, or a task back again."""

import logging
import uuid as uuid_module

from django.db import IntegrityError, transaction
from django.utils import timezone

from atp import events, sql, validation
from atp.exceptions import DuplicateTask, InvalidInput, QueueFull
from atp.models import LogRecord, Status, TaskInstance, TaskType
from atp.tracker.core import _get_task, _get_type, _lineage, _log, _transition
from atp.tracker.reading import get_max_queue_size

logger = logging.getLogger("atp.tracker")


#: Options ``enqueue_task`` accepts.
ENQUEUE_OPTIONS = ("priority", "queue", "run_after", "eta", "countdown", "expires", "parent")


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
