"""A schedule's runs: ordinary tasks named after their slot, and which missed slots run.

A run's identifier is ``<name>@<slot as YYYY-MM-DDTHH:MM:SSZ>``. Every daemon computes the
same slots and the same identifiers, so the unique (type, identifier) constraint of the task
table lets a slot's run be enqueued once, whichever daemons try and however many.
"""

import logging
import secrets
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q

from atp import tracker
from atp.conf import settings
from atp.exceptions import DuplicateTask, QueueFull
from atp.models import Schedule, TaskInstance, Worker

logger = logging.getLogger("atp.schedules")

SLOT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def slot_identifier(name: str, slot: datetime) -> str:
    """The identifier of the run of schedule ``name`` for ``slot`` (a UTC instant)."""
    return f"{name}@{slot.strftime(SLOT_FORMAT)}"


def runs_of(schedule: Schedule):
    """The schedule's runs (slot runs and extra runs), newest first."""
    return TaskInstance.objects.filter(
        type_id=schedule.task_type_id, identifier__startswith=f"{schedule.name}@"
    ).order_by("-id")


def enqueue_run(
    schedule: Schedule, slot: datetime, *, catch_up: bool = False
) -> tuple[int | None, bool]:
    """Enqueue the run of ``slot``; ``catch_up`` marks a missed slot run late.

    Returns ``(task id, whether this call created it)``. A slot already enqueued (by another
    daemon, or an earlier tick) is not an error: the unique constraint refused the second
    copy, which is the point, and the existing task's id is returned. The insert runs in a
    savepoint, so a refused one leaves the caller's transaction usable. A full queue drops
    the run with a warning: ``(None, False)``.
    """
    identifier = slot_identifier(schedule.name, slot)
    what = f"slot {slot.strftime(SLOT_FORMAT)}" + (" (missed)" if catch_up else "")
    try:
        with transaction.atomic():
            task_id = _enqueue(schedule, identifier, slot, catch_up, what)
    except (DuplicateTask, IntegrityError):
        logger.debug("Schedule %s: %s was already enqueued", schedule.name, what)
        existing = TaskInstance.objects.filter(type_id=schedule.task_type_id, identifier=identifier)
        return existing.values_list("pk", flat=True).first(), False
    except QueueFull as exc:
        logger.warning("Schedule %s: %s not enqueued: %s", schedule.name, what, exc)
        return None, False
    return task_id, True


def enqueue_extra(schedule: Schedule) -> int:
    """Enqueue an extra run ("run now") with an identifier of its own; return its id.

    Raises QueueFull when the queue is full.
    """
    identifier = f"{schedule.name}@now-{secrets.token_hex(6)}"
    return _enqueue(schedule, identifier, None, False, "an extra run")


def _enqueue(schedule, identifier, slot, catch_up, what) -> int:
    """The run as an ordinary task; its ``task-sent`` event names the schedule and slot."""
    fields = {
        "schedule": schedule.name,
        "slot": slot.strftime(SLOT_FORMAT) if slot is not None else None,
        "catch_up": catch_up,
    }
    task_id = tracker.enqueue_task(
        schedule.task_type.identifier,
        identifier,
        schedule.input,
        f"Schedule {schedule.name}: {what}.",
        event_fields=fields,
        **schedule.options,
    )
    logger.info("Schedule %s: enqueued %s as task %d", schedule.name, what, task_id)
    return task_id


def choose_missed(missed: list[datetime], catch_up: str) -> list[datetime]:
    """The missed slots to run after all: the latest, all of them, or none."""
    if catch_up == Schedule.CatchUp.ALL:
        return missed
    if catch_up == Schedule.CatchUp.ONE:
        return missed[-1:]
    return []


def daemon_lifetimes(after: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """When daemons ran between ``after`` and ``until``: a ``(start, end)`` per daemon.

    A daemon still beating runs until ``until``; one that stopped ran until its stop; one
    that went silent (killed, or cut off from the database) ran until about one heartbeat
    after its last. A slot at whose time no daemon ran was *missed*: nothing could have
    enqueued it then.
    """
    beat = timedelta(seconds=settings.HEARTBEAT_INTERVAL)
    fresh = until - timedelta(seconds=settings.WORKER_TIMEOUT)
    rows = Worker.objects.filter(started_at__lte=until).filter(
        Q(stopped_at__isnull=True) | Q(stopped_at__gte=after)
    )
    spans = []
    for start, heartbeat, stopped in rows.values_list("started_at", "heartbeat_at", "stopped_at"):
        if stopped is None and heartbeat >= fresh:
            end = until
        else:
            end = min(stopped or until, heartbeat + beat)
        if end >= after:
            spans.append((start, end))
    return spans


def covered(slot: datetime, spans: list[tuple[datetime, datetime]]) -> bool:
    """Whether a daemon ran at ``slot``."""
    return any(start <= slot <= end for start, end in spans)
