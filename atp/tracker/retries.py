"""Retries: a task's handler asks to run again later (or failed and its type retries it).

A retry is not a restart: ``maxrestart`` counts attempts lost to timeouts and dead daemons,
``max_retries`` counts re-runs the handler (or the runner, for a handler that raised) asked
for. A retry sends ``task-retried``, puts the task back to ACCEPTED with a future
``run_after`` and adds one to ``retries``.
"""

import random
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from atp import validation
from atp.tracker.core import _check_owner, _get_task
from atp.tracker.queueing import reenqueue_task
from atp.tracker.running import stop_task_failure


def backoff_delay(retry_backoff, retries, retry_backoff_max) -> float:
    """Seconds before retry number ``retries + 1``: exponential backoff with full jitter.

    The ceiling is ``retry_backoff × 2**retries``, capped at ``retry_backoff_max``; the delay
    is drawn uniformly below it, so many tasks failing together do not retry together.
    """
    ceiling = min(retry_backoff * (2**retries), retry_backoff_max)
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


def retry_or_fail(
    task_id,
    *,
    attempt,
    countdown=None,
    exception="",
    traceback="",
    message=None,
    automatic=False,
) -> tuple[str, float | None]:
    """Re-enqueue the running attempt ``attempt`` of a task for a retry, or fail the task.

    The task fails (with a message saying so) when its type's ``max_retries`` are used up.
    ``countdown`` (seconds) overrides the backoff delay. ``automatic`` means the runner asks
    for a handler that raised: then a type with ``max_retries = 0`` fails at once, with the
    handler's ``message``. Returns ``("retried", delay)`` or ``("failed", None)``.
    Raises StaleAttempt when the attempt was given up meanwhile.
    """
    if countdown is not None:
        countdown = validation.number(countdown, "countdown", minimum=0)
    with transaction.atomic():
        # Lock first so the retries counter read here is the one the re-enqueue increments.
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        task_type = task.type
        if task.retries >= task_type.max_retries:
            if automatic and task_type.max_retries == 0:
                message = message or _message_of(exception)
            else:
                message = (
                    f"Retry refused: the task already used its {task_type.max_retries} "
                    f"retry(ies) (max_retries). Last error: {_message_of(exception)}"
                )
            stop_task_failure(
                task_id, message, attempt=attempt, exception=exception, traceback=traceback
            )
            return "failed", None
        if countdown is None:
            delay = backoff_delay(
                task_type.retry_backoff, task.retries, task_type.retry_backoff_max
            )
        else:
            delay = countdown
        number = task.retries + 1
        reenqueue_task(
            task_id,
            f"Retry {number} of {task_type.max_retries} in {delay:.3f} s: {_message_of(exception)}",
            attempt=attempt,
            run_after=timezone.now() + timedelta(seconds=delay),
            retry=True,
            exception=exception,
            traceback=traceback,
        )
    return "retried", delay


def _message_of(exception) -> str:
    return str(exception) if exception else "no error given"


def describe(exc) -> str:
    """``module.Class: message`` of an exception (the form the runner records)."""
    if exc is None:
        return ""
    if isinstance(exc, BaseException):
        return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    return str(exc)
