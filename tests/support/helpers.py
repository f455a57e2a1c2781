"""Small assertions and shortcuts shared by the tracker tests."""

import logging
from contextlib import contextmanager
from datetime import timedelta

from django.utils import timezone

from atp import tracker
from atp.daemon.outcomes import record
from atp.daemon.runner import execute
from atp.exceptions import InvalidTransition, StaleAttempt, TaskNotFound
from atp.models import (
    Dependency,
    LogRecord,
    QueuePause,
    Response,
    TaskInstance,
    TaskType,
    Workflow,
)


def row_counts() -> dict[str, int]:
    """How many rows each of ATP's task tables holds."""
    return {
        model.__name__: model.objects.count()
        for model in (
            TaskType,
            TaskInstance,
            LogRecord,
            Response,
            Dependency,
            Workflow,
            QueuePause,
        )
    }


@contextmanager
def nothing_written():
    """Assert the block adds, changes the number of, or deletes no row of ATP's tables.

    Use it around ``pytest.raises`` to prove that a refused call leaves nothing behind.
    """
    before = row_counts()
    yield
    assert row_counts() == before


def ago(seconds: float):
    """The aware datetime ``seconds`` before now."""
    return timezone.now() - timedelta(seconds=seconds)


def age(queryset, seconds: float, field: str = "updated_at") -> None:
    """Move ``field`` of every row of ``queryset`` ``seconds`` into the past."""
    queryset.update(**{field: ago(seconds)})


def events_of(task_id) -> list[str]:
    """The Celery event names of a task's log, oldest first."""
    return list(
        LogRecord.objects.filter(instance_id=task_id)
        .order_by("time", "id")
        .values_list("event", flat=True)
    )


def run_task(task_id, server_id) -> str | None:
    """Start the claimed task ``task_id`` here, run its handler and record the outcome."""
    try:
        attempt = tracker.begin_attempt(task_id, server_id=server_id)
    except (StaleAttempt, InvalidTransition, TaskNotFound) as exc:
        logging.getLogger("atp.runner").warning("Task %s not started: %s", task_id, exc)
        return None
    return record(execute(attempt))
