"""Pausing and resuming a queue or a task type, for every daemon at once.

A pause is stored in the database (a ``QueuePause`` row, ``TaskType.paused``); running tasks
finish, and paused tasks stay ACCEPTED. A type's pause is read by the claim statement itself
(the type's row is already joined there). The paused queues are read once per claim by the
ORM path (SQLite, and PostgreSQL's judged tasks), while a daemon on PostgreSQL keeps them
in memory for its one-statement claim: it reads them at start, at every poll interval and
at once when a pause or resume notifies it (``NOTIFY atp_enqueued`` with the payload
``sql.PAUSES_CHANGED``, delivered on commit). A queue may be paused before any task uses
it. Resuming also wakes idle daemons, so they claim at once.

A pause writes the ``task-pending`` event of every task it stops (``atp.tracker.pending``).
A daemon that already claimed tasks of a paused queue or type without starting them (its
prefetch) gives them back (``give_back_unstarted``): they never start while paused.
"""

import logging

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from atp import events, sql, validation
from atp.exceptions import InvalidInput
from atp.models import QueuePause, Status, TaskInstance, TaskType
from atp.tracker import pending
from atp.tracker.core import _transition

logger = logging.getLogger("atp.tracker")


def pause_queue(name) -> bool:
    """Stop every daemon from claiming tasks of queue ``name``; False if it was paused."""
    name = validation.identifier(name, "queue")
    with transaction.atomic():
        pause, created = QueuePause.objects.get_or_create(queue=name)
        if created:
            pending.on_pause(pause.paused_at, queue=name)
            sql.notify_pauses()
    if created:
        logger.info("Paused queue %s", name)
    return created


def resume_queue(name) -> bool:
    """Let daemons claim tasks of queue ``name`` again; False if it was not paused."""
    name = validation.identifier(name, "queue")
    with transaction.atomic():
        deleted, _ = QueuePause.objects.filter(queue=name).delete()
        if deleted:
            sql.notify_pauses()
            sql.notify_enqueued(name)  # wakes idle daemons when this commits
    if deleted:
        logger.info("Resumed queue %s", name)
    return bool(deleted)


def pause_task_type(identifier) -> bool:
    """Stop every daemon from claiming tasks of a type; False if it was paused already."""
    return _set_paused(identifier, True)


def resume_task_type(identifier) -> bool:
    """Let daemons claim tasks of a type again; False if it was not paused."""
    return _set_paused(identifier, False)


def _set_paused(identifier, paused: bool) -> bool:
    identifier = validation.identifier(identifier, "task type")
    with transaction.atomic():
        task_type = TaskType.objects.select_for_update().filter(identifier=identifier).first()
        if task_type is None:
            raise InvalidInput(f"unknown task type {identifier!r}: nothing to pause or resume")
        if task_type.paused == paused:
            return False
        now = timezone.now()
        TaskType.objects.filter(pk=task_type.pk).update(paused=paused, updated_at=now)
        if paused:
            pending.on_pause(now, task_type=task_type)
        else:
            sql.notify_enqueued(task_type.queue)
        # The claim statement reads a type's pause itself; daemons are told anyway, so
        # one holding prefetched tasks of the type gives them back at once.
        sql.notify_pauses()
    logger.info("%s task type %s", "Paused" if paused else "Resumed", identifier)
    return True


def paused_queues() -> list[str]:
    """The names of the paused queues."""
    return list(QueuePause.objects.order_by("queue").values_list("queue", flat=True))


def give_back_unstarted(task_id, attempt: int, reason: str) -> None:
    """Put back in the queue a claimed attempt that never started, as before its claim.

    For a daemon that withdrew a prefetched attempt from its pool (its queue or type was
    paused after the claim): the task becomes ACCEPTED with its attempt number free again
    (no handler held it, so no restart is used) and keeps its place (``run_after``), then
    gets the ``task-pending`` event of what holds it. ``attempt`` fences: a task that moved
    on meanwhile raises StaleAttempt or InvalidTransition and is left as it is.
    """
    with transaction.atomic():
        task = _transition(
            task_id,
            Status.ACCEPTED,
            f"Given back to the queue before it started ({reason}); no restart used.",
            attempt=attempt,
            sources={Status.RUNNING},
            event=events.TASK_RETRIED,
            changes=lambda task: {"server_id": "", "attempts": task.attempts - 1},
            fields=lambda task, moment: {"exception": reason, "traceback": ""},
        )
        pending.after_requeue(task)


def paused_among(task_ids, pauses: tuple[list[str], list[int]]) -> list[int]:
    """Which of ``task_ids`` belong to a queue or type paused in ``pauses`` (``current()``)."""
    queues, types = pauses
    if not task_ids or not (queues or types):
        return []
    paused = Q(queue__in=queues) | Q(type_id__in=types)
    return list(
        TaskInstance.objects.filter(paused, pk__in=list(task_ids)).values_list("pk", flat=True)
    )


def current() -> tuple[list[str], list[int]]:
    """What is paused now: the queue names and the task type ids."""
    types = TaskType.objects.filter(paused=True).values_list("pk", flat=True)
    return paused_queues(), list(types)


def unpaused(tasks, pauses: tuple[list[str], list[int]]):
    """``tasks`` without those of the paused queues and types ``pauses`` (``current()``).

    The pauses are written into the query as constants, and only when there are any: a
    sub-select there would hide from the planner how few rows it removes, and it would give
    up the claim index for a scan of every waiting task.
    """
    queues, types = pauses
    if queues:
        tasks = tasks.exclude(queue__in=queues)
    if types:
        tasks = tasks.exclude(type_id__in=types)
    return tasks
