"""Running one claimed task's handler in the current process, and recording how it ended."""

import logging
import traceback as traceback_module

from django.utils.module_loading import import_string

from atp import tracker
from atp.exceptions import InvalidTransition, StaleAttempt, TaskNotFound
from atp.taskstatus import TaskStatus

logger = logging.getLogger("atp.runner")


def run_task(task_id, server_id) -> None:
    """Start the claimed task ``task_id``, call its handler and record the outcome.

    The handler is ``handler(task_status, input)``. If it raises, the task ends FAILED with
    the exception and traceback; if it returns without ending its task, the task ends
    FINISHED (the return value's repr is the event's ``result``). A task this worker lost
    meanwhile (``StaleAttempt``) is left to its new owner.
    """
    try:
        attempt = tracker.begin_attempt(task_id, server_id=server_id)
    except (StaleAttempt, InvalidTransition, TaskNotFound) as exc:
        logger.warning("Task %s not started: %s", task_id, exc)
        return
    status = TaskStatus(task_id, attempt.number, soft_time_limit=attempt.soft_time_limit)
    try:
        handler = import_string(attempt.handler)
        result = handler(status, attempt.input)
    except StaleAttempt as exc:
        logger.warning("Task %s lost while running: %s", task_id, exc)
        return
    except Exception as exc:
        if not _end_if_aborted(status, task_id, f" (the handler raised {exc!r})"):
            _record_failure(task_id, attempt, exc)
        return
    if _end_if_aborted(status, task_id):
        return
    _record(
        tracker.stop_task_success_if_not_finished,
        task_id,
        attempt=attempt.number,
        result=result,
    )


def _end_if_aborted(status, task_id, detail="") -> bool:
    """End the task REVOKED if an abort was requested while its handler ran (``control.abort``)."""
    if not status.is_aborted():
        return False
    try:
        tracker.revoke_task(task_id, f"Aborted on request{detail}.")
    except (InvalidTransition, TaskNotFound):
        pass  # it already ended: revoked meanwhile, or its handler set the outcome itself
    return True


def _record_failure(task_id, attempt, exc) -> None:
    logger.error("Task %s::%s failed: %r", attempt.type, attempt.identifier, exc)
    _record(
        tracker.stop_task_failure,
        task_id,
        str(exc) or type(exc).__name__,
        attempt=attempt.number,
        exception=f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}",
        traceback="".join(traceback_module.format_exception(exc)),
    )


def _record(setter, task_id, *args, **kwargs) -> None:
    """Record an outcome unless the task was taken away or ended meanwhile."""
    try:
        setter(task_id, *args, **kwargs)
    except (StaleAttempt, InvalidTransition, TaskNotFound) as exc:
        logger.warning("Outcome of task %s not recorded: %s", task_id, exc)
