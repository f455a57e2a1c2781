"""The tracker's core: result types, lookups, a transition's log record, ``_transition``."""

import logging
from collections import namedtuple
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from atp import events
from atp.exceptions import InvalidTransition, StaleAttempt, TaskNotFound, UnknownTaskType
from atp.models import TERMINAL, LogRecord, Status, TaskInstance, TaskType, sources_of
from atp.text import storable, storable_json

logger = logging.getLogger("atp.tracker")


#: ``get_task_info`` result: the seed's (type, identifier, status, status name) tuple.
TaskInfo = namedtuple("TaskInfo", "type identifier status status_name")
#: ``get_task_status`` result.
StatusInfo = namedtuple("StatusInfo", "status status_name")
#: ``get_task_identifier`` result: the seed's (type identifier, instance identifier) tuple.
TaskIdentifier = namedtuple("TaskIdentifier", "type identifier")


class SweepEntry(namedtuple("SweepPair", "task_id name")):
    """One task a sweep acted on: the seed's ``(id, "type::identifier")`` pair.

    It unpacks and compares as that pair (``for task_id, name in reenqueue_zombie_tasks()``);
    what the sweep did ("reenqueued", "failed", "deleted") is the ``action`` attribute.
    """

    action: str  # not a field: the entry stays a pair

    def __new__(cls, task_id, name, action=""):
        """The pair ``(task_id, name)``, carrying ``action``."""
        entry = super().__new__(cls, task_id, name)
        entry.action = action
        return entry

    def __repr__(self):
        return f"SweepEntry(task_id={self.task_id!r}, name={self.name!r}, action={self.action!r})"


#: One entry of ``get_task_log``: ``(time, (status, status_name), message)``.
LogEntry = namedtuple("LogEntry", "time status message")


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
    #: Seconds without an update of the task after which the handler is killed as silent
    #: (``atp.daemon.limits``); ``hard_time_limit`` is the only wall-clock limit.
    timeout: float
    #: Its type has a concurrency_limit: the daemon runs it in an idle slot, never queued
    #: behind other work (it holds a place of its key from its claim).
    limited: bool = False


def _get_type(identifier) -> TaskType:
    if isinstance(identifier, TaskType):
        return identifier
    try:
        return TaskType.objects.get(identifier=identifier)
    except TaskType.DoesNotExist:
        raise UnknownTaskType(
            f"unknown task type {identifier!r}; register it with register_task_type() first"
        ) from None


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


def _log(task, status, message, event, moment, **fields) -> LogRecord:
    """Build (unsaved) the LogRecord of one transition, with its Celery event.

    Every caller saves it in the transition's transaction; its signals fire on commit.
    The message and every string of the fields are made storable here (``atp.text``): they
    carry what handlers raised and returned, which may hold NUL or lone surrogates.
    """
    record = LogRecord(
        instance=task,
        time=moment,
        status=status,
        message=storable(message),
        event=event,
        fields=storable_json(events.task_fields(task, moment, **fields)),
    )
    events.signal_on_commit(record)
    return record


def _lineage(task: TaskInstance) -> dict:
    """Celery's ``root_id`` and ``parent_id`` of a task: its top ancestor and its parent."""
    if task.parent_id is None:
        return {"root_id": str(task.uuid), "parent_id": None}
    parent, root = task.parent, task.parent
    while root.parent_id is not None:  # type: ignore[union-attr]
        root = root.parent  # type: ignore[union-attr]
    return {"root_id": str(root.uuid), "parent_id": str(parent.uuid)}  # type: ignore[union-attr]


def _join(*parts) -> str:
    return " ".join(part for part in parts if part)


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
        if attempt is not None and task.status == Status.WAITING:
            # The handler handed its task to its subtasks: only their roll-up (or a revoke,
            # which passes no attempt) ends it, or the parent could end FINISHED while its
            # subtasks go on to fail.
            raise InvalidTransition(
                f"task {task} (id {task.pk}) is WAITING for its subtasks; only their roll-up "
                "or a revoke ends it, not its handler"
            )
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
        attempt_ends = target in (Status.FINISHED, Status.FAILED) or (
            target == Status.ACCEPTED and task.status in (Status.RUNNING, Status.PAUSED)
        )
        if task.kill_signal is not None and attempt_ends:
            # revoke(terminate=True) was asked: the task ends REVOKED whatever its handler
            # reported (it caught the signal and returned, failed, or asked for a retry), and
            # is never re-run by a restart. Under the row lock, as the abort below.
            if target == Status.ACCEPTED:
                values = {}  # a re-enqueue's changes (server, run_after) do not apply
            target, event = Status.REVOKED, events.TASK_REVOKED
            event_fields = events.revoked_fields(True, task.kill_signal, False)
            message = _join(f"Terminated on request (signal {task.kill_signal}).", message)
        elif task.abort_requested_at is not None and target in (Status.FINISHED, Status.FAILED):
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
        if target == Status.ACCEPTED and task.kill_signal is not None:
            values["kill_signal"] = None  # a kill request never outlives its attempt
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


#: What a task's end triggers, called by ``_ended``; ``atp.tracker``'s ``__init__`` adds the
#: subtask roll-up (``subtasks.subtask_ended``) and the release of dependents
#: (``dependencies.dependency_ended``). They end or release other tasks through the
#: transitions built on this module, so this module cannot import them without a cycle.
SUBTASK_ENDED_HOOKS: list = []
DEPENDENCY_ENDED_HOOKS: list = []


def _ended(task: TaskInstance) -> None:
    """The one hook every terminal transition calls, inside its transaction.

    A subtask's end is counted into its parent here (``_subtask_ended``), so the count
    commits with the status, exactly once; the tasks that depend on it are released or
    revoked here too (``DEPENDENCY_ENDED_HOOKS``), in the same transaction.
    """
    if task.parent_id is not None:
        _subtask_ended(task)
    if task.has_dependents:
        for hook in DEPENDENCY_ENDED_HOOKS:
            hook(task)


def _subtask_ended(task: TaskInstance) -> None:
    """Count the subtask ``task``, which just ended, into its parent (``SUBTASK_ENDED_HOOKS``)."""
    for hook in SUBTASK_ENDED_HOOKS:
        hook(task)


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
        limited=task.type.concurrency_limit is not None,
    )
