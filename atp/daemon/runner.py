"""Running a started attempt's handler, and recording how it ended.

``execute`` runs where the handler runs (a pool child, a thread, or in-process) and only
reports; ``record`` writes the outcome through the tracker. Keeping them apart lets the
daemon record outcomes of children that died, and retry a record while the database is away.
"""

import logging
import time
import traceback as traceback_module
from dataclasses import dataclass

from django.utils.module_loading import import_string

from atp import tracker
from atp.daemon.db import CONNECTION_ERRORS
from atp.exceptions import InvalidTransition, Retry, StaleAttempt, TaskNotFound
from atp.taskstatus import TaskStatus
from atp.tracker import retries
from atp.tracker.results import json_text

logger = logging.getLogger("atp.runner")


@dataclass(frozen=True)
class Outcome:
    """How one attempt's handler ended; plain values only, so it crosses process pipes."""

    task_id: int
    attempt: int
    succeeded: bool
    result: str = ""  # repr of the return value
    result_json: str | None = None  # the return value as JSON text, when it is JSON
    message: str = ""
    exception: str = ""  # "module.Class: message"
    traceback: str = ""
    runtime: float = 0.0
    lost: bool = False  # the handler learnt (StaleAttempt) that its task was taken away
    handled: bool = False  # the handler already re-enqueued (retry) or failed its task
    transient: bool = False  # it failed because the database went away: worth a restart


def execute(attempt: tracker.Attempt) -> Outcome:
    """Call the attempt's handler ``handler(task_status, input)`` and report how it ended."""
    status = TaskStatus(attempt.task_id, attempt.number, soft_time_limit=attempt.soft_time_limit)
    begin = time.monotonic()
    try:
        handler = import_string(attempt.handler)
        result = handler(status, attempt.input)
    except StaleAttempt as exc:
        return Outcome(attempt.task_id, attempt.number, False, message=str(exc), lost=True)
    except Retry as signal:  # task_status.retry() already wrote the task's new status
        return Outcome(
            attempt.task_id,
            attempt.number,
            False,
            message=str(signal),
            handled=True,
            runtime=time.monotonic() - begin,
        )
    except CONNECTION_ERRORS as exc:
        return Outcome(
            attempt.task_id,
            attempt.number,
            False,
            message=f"the database went away while the handler ran: {exc}",
            exception=f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}",
            transient=True,
        )
    except BaseException as exc:  # noqa: BLE001 - sys.exit(), KeyboardInterrupt, GeneratorExit…
        # …raised by a handler fail its task only: the pool thread or child serves on.
        return failure(attempt, exc, time.monotonic() - begin)
    return Outcome(
        attempt.task_id,
        attempt.number,
        True,
        result=_safe_repr(result),
        result_json=json_text(result),
        runtime=time.monotonic() - begin,
    )


def failure(attempt: tracker.Attempt, exc: BaseException, runtime: float = 0.0) -> Outcome:
    """The outcome of a handler that raised ``exc``, described without trusting ``exc``.

    An exception whose ``__str__`` raises still gets its class and traceback recorded.
    """
    text = _safe_str(exc)
    try:
        trace = "".join(traceback_module.format_exception(exc))
    except Exception:  # noqa: BLE001 - a broken exception must not break its own report
        trace = "".join(traceback_module.format_tb(exc.__traceback__))
    return Outcome(
        attempt.task_id,
        attempt.number,
        False,
        message=text or type(exc).__name__,
        exception=f"{type(exc).__module__}.{type(exc).__qualname__}: {text}",
        traceback=trace,
        runtime=runtime,
    )


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as error:  # noqa: BLE001 - its __str__ raised
        return f"<str() of the exception raised {type(error).__name__}>"


def _safe_repr(value) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not turn a success into a crash
        return f"<unrepresentable {type(value).__name__}: {exc}>"


def record(outcome: Outcome) -> str:
    """Write an outcome through the tracker; return what became of the task.

    "finished", "failed", "retried" (the handler raised and its type retries it),
    "reenqueued" (the database went away under the handler),
    "unchanged" (the handler had already ended, paused-then-finished
    or re-enqueued its task), or "lost" (the attempt was given up meanwhile: the new owner
    decides, this worker writes nothing).
    """
    if outcome.lost:
        return "lost"
    if outcome.handled:
        return "unchanged"
    try:
        if outcome.transient:
            return tracker.restart_or_fail(
                outcome.task_id,
                f"Attempt {outcome.attempt} ended: {outcome.message}.",
                attempt=outcome.attempt,
                exception=outcome.exception,
            )
        if outcome.succeeded:
            changed = tracker.stop_task_success_if_not_finished(
                outcome.task_id,
                attempt=outcome.attempt,
                result_repr=outcome.result,
                result_json=outcome.result_json,
            )
            return "finished" if changed else "unchanged"
        # A type with max_retries > 0 retries a handler that raised (with its backoff);
        # with none (left) the task fails with the handler's exception.
        action, _ = retries.retry_or_fail(
            outcome.task_id,
            attempt=outcome.attempt,
            exception=outcome.exception or outcome.message,
            traceback=outcome.traceback,
            message=outcome.message,
            automatic=True,
        )
        return action
    except StaleAttempt:
        return "lost"
    except (InvalidTransition, TaskNotFound):
        return "unchanged"


def record_all(outcomes) -> list[str]:
    """Record many outcomes; plain successes share one batch (``tracker.finish_tasks``).

    Returns what became of each task, in the order given (see ``record``). Call inside a
    transaction to commit the whole batch at once.
    """
    plain = [
        outcome
        for outcome in outcomes
        if outcome.succeeded and not (outcome.lost or outcome.handled or outcome.transient)
    ]
    successes = [
        (outcome.task_id, outcome.attempt, outcome.result, outcome.result_json) for outcome in plain
    ]
    finished = tracker.finish_tasks(successes) if successes else {}
    return [finished.get(outcome.task_id) or record(outcome) for outcome in outcomes]


def run_task(task_id, server_id) -> str | None:
    """Start the claimed task ``task_id`` here, run its handler and record the outcome."""
    try:
        attempt = tracker.begin_attempt(task_id, server_id=server_id)
    except (StaleAttempt, InvalidTransition, TaskNotFound) as exc:
        logger.warning("Task %s not started: %s", task_id, exc)
        return None
    return record(execute(attempt))
