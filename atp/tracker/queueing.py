"""Putting tasks in the queue (ACCEPTED): one task, a batch, or a task back again."""

import json
import logging
import uuid as uuid_module
from datetime import timedelta
from types import SimpleNamespace

from django.db import IntegrityError, transaction
from django.utils import timezone

from atp import events, sql, validation
from atp.conf import settings
from atp.exceptions import DuplicateTask, InvalidInput, QueueFull, UnknownTaskType
from atp.models import TERMINAL, LogRecord, Status, TaskInstance, TaskType, sources_of
from atp.text import storable
from atp.tracker import dependencies, pending, unique
from atp.tracker.core import _get_task, _get_type, _lineage, _log, _transition
from atp.tracker.reading import get_max_queue_size

logger = logging.getLogger("atp.tracker")


#: Options ``enqueue_task`` accepts.
ENQUEUE_OPTIONS = (
    "priority",
    "queue",
    "run_after",
    "eta",
    "countdown",
    "expires",
    "parent",
    "depends_on",
    "on_dependency_failure",
    "workflow",
    "unique_key",
    "unique_for",
    "concurrency_key",
)
#: The options that are per task in a batch (an item's third element may set them).
KEY_OPTIONS = ("unique_key", "concurrency_key")


def enqueue_task(
    type, identifier=None, input=None, message="", *, event_fields=None, **options
) -> int:
    """Put a new task in the queue (ACCEPTED) and return its id.

    Parameters: ``type`` (task type identifier), ``identifier`` (≤64 characters, unique per
    type; a UUID when None), ``input`` (JSON-serialisable), ``message`` (for the log), and
    options ``priority`` (higher first; default the type's), ``queue``, ``run_after``/``eta``
    (datetime) or ``countdown`` (seconds), ``expires`` (datetime or seconds from now; an
    expired task is revoked, not run), ``parent`` (task id), ``unique_key`` and
    ``unique_for`` (see ``enqueue_unique``: while a task of the type holds the key, the
    call returns that task's id and creates nothing) and ``concurrency_key`` (the key the
    type's ``concurrency_limit`` counts; None = the type's one shared key). ``event_fields``
    (a dict) are added to the task's ``task-sent`` event (a schedule's run names its
    schedule there).

    Raises UnknownTaskType, InvalidInput, DuplicateTask, or QueueFull when the type's queue
    already holds its limit of waiting tasks. The limit check and the insert are atomic.
    """
    return _enqueue_one(type, identifier, input, message, options, event_fields)[0]


def enqueue_unique(
    type, identifier=None, input=None, message="", *, unique_key, unique_for=None, **options
) -> tuple[int, bool]:
    """Enqueue a task unless one of the same type holds ``unique_key``; ``(task id, created)``.

    A task holds its key from its enqueue until it ends (waiting, blocked, scheduled,
    running, paused or waiting for subtasks) and, with ``unique_for`` (seconds or a
    timedelta), also until its enqueue is that old, ended or not. While the key is held,
    the call creates nothing, writes no log record and returns the holder's id with
    ``created`` False. Concurrent callers, in any process, get one task: the check and the
    insert happen under a lock on the key (``atp.tracker.unique``). Other parameters and
    errors as ``enqueue_task``; ``identifier`` and ``input`` only matter when the task is
    created.
    """
    if unique_key is None:
        raise InvalidInput("unique_key must be given to enqueue_unique")
    options.update(unique_key=unique_key, unique_for=unique_for)
    return _enqueue_one(type, identifier, input, message, options)


def _enqueue_one(type, identifier, input, message, options, event_fields=None):
    """``enqueue_task``'s work; returns ``(task id, created)``."""
    task_type = _enqueue_type(type)
    task_uuid = uuid_module.uuid4()
    identifier = str(task_uuid) if identifier is None else validation.identifier(identifier)
    where = f"task {task_type.identifier}::{identifier}"
    validation.json_input(input, where)
    validation.text(message, "message")
    keys, unique_for = _flow_options(options)
    if unique_for is not None and keys["unique_key"] is None:
        raise InvalidInput(f"unique_for needs a unique_key ({where})")
    item = (identifier, task_uuid, input, keys["unique_key"], keys["concurrency_key"])
    try:
        (task_id,), (created,) = _enqueue(
            task_type,
            [item],
            message,
            options,
            where,
            check_limit=True,
            event_fields=event_fields,
            unique_for=unique_for,
        )
    except IntegrityError as exc:
        # By the type's identifier: ``task_type`` may be a stale copy ``_enqueue`` replaced.
        clash = TaskInstance.objects.filter(type__identifier=task_type.identifier)
        if clash.filter(identifier=identifier).exists():
            raise DuplicateTask(
                f"{where} already exists; choose another identifier or delete the old task"
            ) from exc
        raise
    if created:
        logger.debug("Enqueued %s (id %d)", where, task_id)
        _eager()
    else:
        logger.debug("Not enqueued %s: task %d holds its unique key", where, task_id)
    return task_id, created


def enqueue_tasks(type, items, message="", *, check_limit=True, **options) -> list[int]:
    """Enqueue many tasks of one type in one transaction; return their ids in order.

    ``items`` are ``(identifier, input)`` pairs (identifier None = a UUID), or triples
    whose third element is a dict that sets ``unique_key``/``concurrency_key`` for that
    item; options as for ``enqueue_task`` apply to all. An item whose unique key a task
    holds (or an earlier item of the batch) gets that task's id and creates nothing.
    The queue limit is checked once for the whole batch,
    atomically with the insert: either every task is enqueued or none (QueueFull,
    DuplicateTask, InvalidInput). ``check_limit=False`` skips the limit (used for the
    subtasks of an admitted parent, see ``atp.tracker.subtasks``).
    """
    task_type = _enqueue_type(type)
    where = f"tasks of type {task_type.identifier}"
    validation.text(message, "message")
    fields = _enqueue_fields(task_type, options, where)
    defaults, unique_for = _flow_options(options)
    items = [tuple(item) for item in items]
    # One check of all inputs at once is much faster than one per task; only if it fails
    # is each checked in turn, so the error still names the first bad task.
    check_each = not _valid_json([item[1] for item in items], where)
    batch = []
    for identifier, task_input, *own in items:
        task_uuid = uuid_module.uuid4()
        identifier = str(task_uuid) if identifier is None else validation.identifier(identifier)
        if check_each:
            validation.json_input(task_input, f"task {task_type.identifier}::{identifier}")
        keys = _item_keys(own, defaults, f"task {task_type.identifier}::{identifier}")
        batch.append(
            (identifier, task_uuid, task_input, keys["unique_key"], keys["concurrency_key"])
        )
    if unique_for is not None and all(item[3] is None for item in batch):
        raise InvalidInput(f"unique_for needs a unique_key ({where})")
    if len({item[0] for item in batch}) != len(batch):
        raise DuplicateTask(f"the batch for type {task_type.identifier!r} repeats an identifier")
    if not batch:
        return []
    try:
        ids, _ = _enqueue(
            task_type, batch, message, options, where, check_limit, fields, unique_for=unique_for
        )
    except IntegrityError as exc:
        raise DuplicateTask(
            f"a task of type {task_type.identifier!r} in the batch already exists; "
            "nothing was enqueued"
        ) from exc
    logger.debug("Enqueued %d task(s) of %s", len(ids), task_type.identifier)
    _eager()
    return ids


#: Called after every enqueue in eager mode: ``atp.testing.after_enqueue``, set by the app's
#: ready() (a hook, not an import: atp.testing runs the daemon's runner, a layer above).
eager_hook = None


def _eager() -> None:
    """In eager mode (``ATP["EAGER"]``), run the queue in this process on commit (atp.testing)."""
    if settings.EAGER and eager_hook is not None:
        eager_hook()


def _flow_options(options: dict) -> tuple[dict, float | None]:
    """The checked keys (``KEY_OPTIONS``) and ``unique_for`` (seconds) among ``options``."""
    keys = {name: _key(options.get(name), name) for name in KEY_OPTIONS}
    unique_for = options.get("unique_for")
    if isinstance(unique_for, timedelta):
        unique_for = unique_for.total_seconds()
    # A duration like any other (at most 10 years): a larger one put the key's cutoff
    # before year 1 and raised OverflowError instead of InvalidInput.
    unique_for = validation.seconds(unique_for, "unique_for", allow_none=True)
    return keys, unique_for or None


def _key(value, name: str) -> str | None:
    """A unique or concurrency key: None, or a non-empty string of at most 64 characters."""
    return None if value is None else validation.identifier(value, name)


def _item_keys(own: list, defaults: dict, where: str) -> dict:
    """An item's keys: the batch's, overridden by the item's own dict (its third element)."""
    if not own:
        return defaults
    if len(own) > 1 or not isinstance(own[0], dict) or set(own[0]) - set(KEY_OPTIONS):
        raise InvalidInput(
            f"an item of a batch is (identifier, input) or (identifier, input, keys) with "
            f"keys a dict of {list(KEY_OPTIONS)}, not {own!r} ({where})"
        )
    return {**defaults, **{name: _key(value, name) for name, value in own[0].items()}}


def _valid_json(value, where: str) -> bool:
    """Whether ``value`` passes ``validation.json_input``."""
    try:
        validation.json_input(value, where)
    except InvalidInput:
        return False
    return True


#: Task types by identifier as this process last read them, for ``_enqueue_type``.
_type_cache: dict[str, TaskType] = {}


def _enqueue_type(type) -> TaskType:
    """The task type to enqueue into, from this process's cache on PostgreSQL.

    Reading the type is a round trip per enqueue otherwise. A cached type may be stale (the
    type re-registered, changed in the admin, deleted, renamed, by any process): the enqueue
    statement checks every value it uses against the type's row, inserts nothing when one
    differs, and ``_enqueue`` then reloads the type here and tries again. So a stale entry
    costs a round trip, never a task with outdated defaults or limit.
    """
    if isinstance(type, TaskType):
        return type
    if not sql.is_postgresql():
        return _get_type(type)
    task_type = _type_cache.get(type) if isinstance(type, str) else None
    if task_type is None:
        task_type = _get_type(type)
        _type_cache[task_type.identifier] = task_type
    return task_type


def _reload_type(task_type: TaskType) -> TaskType:
    """Forget the cached ``task_type`` and read it again (UnknownTaskType if it is gone)."""
    _type_cache.pop(task_type.identifier, None)
    return _enqueue_type(task_type.identifier)


def _enqueue(
    task_type,
    batch,
    message,
    options,
    where,
    check_limit,
    fields=None,
    event_fields=None,
    unique_for=None,
) -> tuple[list[int], list[bool]]:
    """Insert ``batch`` as ACCEPTED tasks; their ids, and whether each was created.

    Items are ``(identifier, uuid, input, unique_key, concurrency_key)``; an item whose
    unique key is held (``atp.tracker.unique``) gets the holder's id instead.
    ``event_fields`` are added to every task's ``task-sent`` event.

    Raises QueueFull, or IntegrityError (a clash) for the caller to name.
    """
    message = storable(message)  # for both paths below (atp.text)
    after = dependencies.clean(
        options.get("depends_on"), options.get("on_dependency_failure"), where
    )
    if after[0] or options.get("workflow") is not None:
        # Dependencies and workflows take the portable path: their rules live there once.
        # It reads the type's row (the cache may be stale; the SQL path checks, this does not).
        task_type = _get_type(task_type.identifier)
        fields = _enqueue_fields(task_type, options, where)
        _check_listed(fields.get("parent"), task_type, batch)
        return _insert_with_orm(
            task_type, fields, batch, message, check_limit, after, where, event_fields, unique_for
        )
    for _ in range(_STALE_TYPE_RETRIES):
        if fields is None:
            fields = _enqueue_fields(task_type, options, where)
        _check_listed(fields.get("parent"), task_type, batch)
        if not sql.is_postgresql():
            return _insert_with_orm(
                task_type,
                fields,
                batch,
                message,
                check_limit,
                event_fields=event_fields,
                unique_for=unique_for,
            )
        done = _insert_with_sql(
            task_type, fields, batch, message, check_limit, event_fields, unique_for
        )
        if done is not None:
            return done
        task_type, fields = _reload_type(task_type), None
    raise UnknownTaskType(
        f"task type {task_type.identifier!r} changed while enqueueing {where}, "
        f"{_STALE_TYPE_RETRIES} times in a row; retry"
    )


#: How often ``_enqueue`` reloads a task type that changed under it before giving up.
_STALE_TYPE_RETRIES = 3


def _insert_with_orm(
    task_type,
    fields,
    batch,
    message,
    check_limit,
    after=([], "revoke"),
    where="",
    event_fields=None,
    unique_for=None,
):
    """The portable insert: unique keys, the limit check, the tasks and logs, one transaction.

    ``after`` is ``(dependency ids, policy)`` from ``dependencies.clean``: with dependencies
    the tasks start BLOCKED (or ACCEPTED, or REVOKED, by what their dependencies did).
    ``event_fields`` are added to each ``task-sent`` event. Returns ``(ids, created)`` as
    ``_enqueue``.
    """
    depends_on, policy = after
    with transaction.atomic():
        now = timezone.now()
        keys = [item[3] for item in batch]
        # The keys' locks come before the queue scope's, as on the SQL path.
        plan = unique.plan(keys, unique.held_keys(task_type, keys, unique_for, now))
        batch = [batch[position] for position in plan.create]
        if not batch:
            return plan.resolve([])
        if check_limit:
            _check_queue_limit(task_type, adding=len(batch))
        locked = dependencies.lock_dependencies(depends_on, where) if depends_on else {}
        status, revoked_because = (
            dependencies.initial_status(locked, policy) if depends_on else (Status.ACCEPTED, "")
        )
        tasks = [_accepted_task(task_type, fields, item, now) for item in batch]
        for task in tasks:
            task.status = status
            if status == Status.REVOKED:
                task.finished_at = now
        TaskInstance.objects.bulk_create(tasks)
        records = [
            _log(
                task,
                Status.ACCEPTED if status == Status.REVOKED else status,
                message,
                events.TASK_SENT,
                now,
                **events.call_fields(task),
                identifier=task.identifier,  # for the search, as _own_fields
                **_sent_lineage(task, locked, depends_on),
                **(event_fields or {}),
            )
            for task in tasks
        ]
        if status == Status.REVOKED:
            fields_revoked = events.revoked_fields(terminated=False, signum=None, expired=False)
            records += [
                _log(task, status, revoked_because, events.TASK_REVOKED, now, **fields_revoked)
                for task in tasks
            ]
        blocking = sum(task.status not in TERMINAL for task in locked.values())
        records += pending.at_enqueue(tasks, now, dependencies=blocking)
        LogRecord.objects.bulk_create(records)
        if depends_on:
            dependencies.attach(tasks, depends_on, locked, policy)
        if status == Status.ACCEPTED:
            sql.notify_enqueued(tasks[0].queue)
    return plan.resolve([task.pk for task in tasks])


def _sent_lineage(task, locked, depends_on) -> dict:
    """``task-sent``'s parent_id/root_id: by its parent task, or by what it depends on."""
    if task.parent_id is not None or not depends_on:
        lineage = _lineage(task)
        if task.workflow_id is not None and task.parent_id is None:
            lineage["root_id"] = str(getattr(task.workflow, "root_uuid", None) or task.uuid)
        return lineage
    root = getattr(task.workflow, "root_uuid", None) if task.workflow_id is not None else None
    return dependencies.sent_lineage(locked, depends_on, root)


def _insert_with_sql(task_type, fields, batch, message, check_limit, event_fields, unique_for):
    """The PostgreSQL insert: one statement in one round trip (``sql.enqueue_rows``).

    Returns ``(ids, created)`` as ``_enqueue``, or None when ``task_type`` turned out stale
    and nothing was inserted.
    """
    size = get_max_queue_size(task_type) if check_limit else None
    limit = None
    if size is not None:
        limit = sql.QueueLimit(size, task_type.pk if task_type.max_queue_size is not None else None)
    now = timezone.now()
    template, root_id = _sent_fields(task_type, fields, batch[0][1], now)
    template.update(event_fields or {})
    params = {
        **_statement_values(task_type, fields, batch, message, now),
        "fields": json.dumps(template),
        "root_id": root_id,
        "unique_since": now - timedelta(seconds=unique_for) if unique_for else None,
    }
    keys = {item[3] for item in batch} - {None}
    result = sql.enqueue_rows(limit, params, (task_type.pk, keys) if keys else None)
    fresh, fits = result[0][0], result[0][2]
    if not fresh:
        return None
    if not fits:
        raise _queue_full(task_type, len(batch), size)
    ids, log_ids, created = [0] * len(batch), [0] * len(batch), [False] * len(batch)
    for *_, position, task_id, log_id, made in result:
        ids[position - 1], log_ids[position - 1] = task_id, log_id
        created[position - 1] = made
    pending.signal_inserted([ids[n] for n, new in enumerate(created) if new], now)
    if events.has_listeners(events.TASK_SENT) and any(created):
        made = [n for n, new in enumerate(created) if new]
        _signal_sent(
            task_type,
            fields,
            [batch[n] for n in made],
            message,
            now,
            template,
            root_id,
            [ids[n] for n in made],
            [log_ids[n] for n in made],
        )
    return ids, created


def _statement_values(task_type, fields, batch, message, now) -> dict:
    """The enqueue statement's values: the type as cached, the batch's, and each task's."""
    rows = []
    for identifier, task_uuid, task_input, unique_key, concurrency_key in batch:
        args, kwargs = events.call_signature(task_input)
        rows.append(
            {
                "identifier": identifier,
                "uuid": str(task_uuid),
                "input": task_input,
                "args": args,
                "kwargs": kwargs,
                "concurrency_key": concurrency_key,
                "unique_key": unique_key,
            }
        )
    parent = fields.get("parent")
    return {
        "type_id": task_type.pk,
        "type_identifier": task_type.identifier,
        "type_priority": task_type.priority,
        "type_queue": task_type.queue,
        "type_max_queue_size": task_type.max_queue_size,
        "adding": len(batch),
        "rows": json.dumps(rows),
        "priority": fields["priority"],
        "queue": fields["queue"],
        "run_after": fields.get("run_after", now),
        "expires": fields["expires"],
        "parent_id": parent.pk if parent is not None else None,
        "now": now,
        "message": message,
        "event": events.TASK_SENT,
        "pending": pending.candidates(
            task_type.identifier, fields["queue"], fields.get("run_after", now), now
        ),
        "pending_event": events.TASK_PENDING,
    }


def _own_fields(
    task_uuid: str, identifier: str, args: str, kwargs: str, root_id: str | None
) -> dict:
    """The ``task-sent`` fields that differ from task to task of a batch.

    The SQL statement sets exactly these over the fields of the batch's first task
    (``atp.sql.enqueue``); keep the two in step. ``identifier`` is not Celery's: it is
    there for the search (``atp.query.search.log_text``).
    """
    return {
        "uuid": task_uuid,
        "identifier": identifier,
        "args": args,
        "kwargs": kwargs,
        "root_id": root_id or task_uuid,
    }


def _sent_fields(task_type, fields, first_uuid, now) -> tuple[dict, str | None]:
    """The ``task-sent`` fields of a batch's first task, and the batch's root id.

    Built by ``atp.events`` as for any transition; the root id is None when the tasks have
    no parent (each task is then its own root). The task is a stand-in with the attributes
    ``atp.events`` reads: a TaskInstance takes longer to build than the rest of an enqueue.
    """
    parent = fields.get("parent")
    first = SimpleNamespace(
        type=task_type,
        uuid=first_uuid,
        input=None,
        retries=0,
        run_after=fields.get("run_after", now),
        expires=fields["expires"],
        queue=fields["queue"],
        parent=parent,
        parent_id=parent.pk if parent is not None else None,
    )
    lineage = _lineage(first)  # type: ignore[arg-type]
    template = events.task_fields(first, now, **events.call_fields(first), **lineage)
    return template, lineage["root_id"] if first.parent_id is not None else None


def _signal_sent(task_type, fields, batch, message, now, template, root_id, ids, log_ids):
    """Queue the ``task-sent`` signals of a batch the SQL statement inserted.

    Only when someone listens: the records and tasks are built here for the listeners,
    equal to what the ORM path saves.
    """
    records = []
    for item, task_id, log_id in zip(batch, ids, log_ids, strict=True):
        task = _accepted_task(task_type, fields, item, now, pk=task_id)
        args, kwargs = events.call_signature(task.input)
        own = _own_fields(str(task.uuid), task.identifier, args, kwargs, root_id)
        records.append(
            LogRecord(
                pk=log_id,
                instance=task,
                time=now,
                status=Status.ACCEPTED,
                message=message,
                event=events.TASK_SENT,
                fields={**template, **own},
            )
        )
    events.signal_all_on_commit(records)


def _accepted_task(task_type, fields, item, now, pk=None) -> TaskInstance:
    """The TaskInstance of one batch ``item`` (as ``_enqueue``), enqueued ``now``."""
    identifier, task_uuid, task_input, unique_key, concurrency_key = item
    return TaskInstance(
        pk=pk,
        type=task_type,
        identifier=identifier,
        uuid=task_uuid,
        status=Status.ACCEPTED,
        input=task_input,
        unique_key=unique_key,
        concurrency_key=concurrency_key,
        enqueued_at=now,
        updated_at=now,
        **{"run_after": now, **fields},
    )


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
        "priority": validation.priority(options.get("priority", task_type.priority)),
        "queue": validation.identifier(options.get("queue") or task_type.queue, "queue"),
    }
    if options.get("countdown") is not None:
        validation.seconds(options["countdown"], "countdown")
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
    if options.get("workflow") is not None:
        fields["workflow"] = options["workflow"]  # atp.workflows passes its Workflow row
    return fields


def has_table(parent: TaskInstance) -> bool:
    """Whether ``parent`` spawned subtasks (its progress holds a subtask table)."""
    progress = parent.progress
    return isinstance(progress, dict) and isinstance(progress.get("subtasks"), dict)


def is_listed(parent: TaskInstance, type_identifier: str, identifier: str) -> bool | None:
    """Whether ``parent``'s subtask table lists this task; None if it has no table."""
    progress = parent.progress
    if not isinstance(progress, dict) or not isinstance(progress.get("subtasks"), dict):
        return None
    return progress.get("subtask_type") == type_identifier and identifier in progress["subtasks"]


def _check_listed(parent, task_type: TaskType, batch) -> None:
    """Refuse children a parent's subtask table does not list (``atp.tracker.subtasks``).

    A parent that spawned subtasks waits for exactly those; an unlisted child would never
    be counted (edX raises on one too). A parent without a table is lineage only.
    """
    if parent is None:
        return
    for item in batch:  # (identifier, uuid, input, ...)
        identifier = item[0]
        if is_listed(parent, task_type.identifier, identifier) is False:
            raise InvalidInput(
                f"parent: task {parent} (id {parent.pk}) waits only for the subtasks its table "
                f"lists; {task_type.identifier}::{identifier} is not one of them"
            )


def _check_queue_limit(task_type: TaskType, adding: int = 1) -> None:
    """Raise QueueFull unless ``adding`` more waiting tasks fit; call inside the transaction."""
    limit = get_max_queue_size(task_type)
    if limit is None:
        return
    scope_id = task_type.pk if task_type.max_queue_size is not None else 0
    sql.lock_queue_scope(scope_id)
    # Counting at most ``limit`` rows keeps the check cheap however long the queue is.
    waiting = _limit_scope(task_type).waiting().order_by()[:limit].count()
    if waiting + adding > limit:
        raise _queue_full(task_type, adding, limit)


def _limit_scope(task_type: TaskType):
    """The tasks that share ``task_type``'s queue limit: its own, or all types without one."""
    if task_type.max_queue_size is not None:
        return TaskInstance.objects.filter(type=task_type)
    return TaskInstance.objects.filter(type__max_queue_size__isnull=True)


def _queue_full(task_type: TaskType, adding: int, limit: int) -> QueueFull:
    """The QueueFull error of ``adding`` tasks that do not fit under ``limit``.

    The checks count waiting tasks only up to the limit; the message counts them all (one
    more query, on the error path only): re-enqueued tasks and subtasks ignore the limit,
    so a queue may hold more than it.
    """
    if task_type.max_queue_size is not None:
        scope_name = f"task type {task_type.identifier!r}"
    else:
        scope_name = "the shared queue"
    waiting = _limit_scope(task_type).waiting().count()
    return QueueFull(
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
    with transaction.atomic():
        task = _transition(
            task_id,
            Status.ACCEPTED,
            message,
            # Not BLOCKED: only its dependencies release a task that waits for them.
            sources=sources_of(Status.ACCEPTED) - {Status.BLOCKED},
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
        pending.after_requeue(task)  # a retry's backoff, a paused queue: why it waits
