"""How an attempt ended, and the tracker call that records it: where an outcome becomes a status.

The pools report every attempt they ran (``atp.daemon.pool``): ``Finished`` with the
``Outcome`` of a handler that returned or raised (``atp.daemon.runner``), or ``Crashed``
when its process died before reporting. The mapping, one function per kind:

=========================================  ==========================================
how the attempt ended                      the tracker call (``record``, ``record_crash``)
=========================================  ==========================================
succeeded                                  ``finish_tasks`` (a plain batch), else
                                           ``stop_task_success_if_not_finished``
raised                                     ``retries.retry_or_fail`` (its type's retries)
the database went away under it            ``restart_or_fail``
the handler ended or retried its task      nothing ("unchanged")
taken away meanwhile (``StaleAttempt``)    nothing ("lost"): the new owner decides
killed: revoked with terminate             ``revoke_task(terminated=True)``
killed: a cold stop of atpd                ``reenqueue_task``
taken back before it began: paused         ``give_back_unstarted`` (no restart used)
killed: time limit, timeout; child crash   ``restart_or_fail`` (``TimeLimitExceeded``,
                                           ``TimeoutError``, ``WorkerLostError``)
recording it failed with an error          ``record_singly``: a failed attempt
                                           (``OutcomeNotRecorded``)
=========================================  ==========================================

Nothing here commits: the engine calls ``record_reports`` inside its record-and-claim
transaction and writes the returned log lines ``(level, message, args)`` after the commit.
"""

import logging

from django.db import transaction

from atp import tracker
from atp.daemon.db import classify
from atp.daemon.limits import SILENT
from atp.daemon.pool import Crashed, Finished
from atp.daemon.runner import Outcome
from atp.exceptions import InvalidTransition, OutcomeNotRecorded, StaleAttempt, TaskNotFound
from atp.tracker import retries

#: Errors that end one task's bookkeeping step but not the daemon: the task moved on.
TASK_GONE = (StaleAttempt, InvalidTransition, TaskNotFound)


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


def record_reports(batch) -> list[tuple]:
    """Write a batch of pool reports through the tracker; return their log lines."""
    lines = []
    finished = [report for report in batch if isinstance(report, Finished)]
    results = record_all([report.outcome for report in finished])
    for report, result in zip(finished, results, strict=True):
        lines.append(_describe(report.attempt, report.outcome, result))
    for report in batch:
        if isinstance(report, Crashed):
            lines.append(record_crash(report))
    return lines


def record_singly(batch, log) -> list[tuple]:
    """Record each report in a savepoint of its own, after a batch failed with an error.

    A report that still fails is the culprit: its task ends as a failed attempt (by its
    type's rules: retried, restarted or FAILED) with the error named, and the daemon
    logs the task with the traceback. The other reports are recorded as usual.
    """
    lines = []
    for report in batch:
        try:
            with transaction.atomic():
                lines += record_reports([report])
            continue
        except Exception as exc:
            if classify(exc) != "error":
                raise
            error = exc
        attempt = report.attempt
        name = _name(attempt)
        log.error("Recording the outcome of %s failed (contained)", name, exc_info=error)
        failed = Outcome(
            attempt.task_id,
            attempt.number,
            False,
            message=f"ATP could not record how attempt {attempt.number} ended: "
            f"{type(error).__name__}; see the daemon's log.",
            exception=f"{OutcomeNotRecorded.__module__}.{OutcomeNotRecorded.__name__}: "
            f"{type(error).__name__}",
        )
        try:
            with transaction.atomic():
                lines.append(
                    (
                        logging.WARNING,
                        "%s ended as a failed attempt: %s",
                        (name, record(failed)),
                    )
                )
        except Exception as exc:
            if classify(exc) != "error":
                raise
            log.error("%s: nothing could be recorded; it stays as it is", name, exc_info=exc)
    return lines


def _describe(attempt, outcome, result) -> tuple:
    """The log line for a recorded outcome."""
    name = _name(attempt)
    if result == "failed":
        return logging.INFO, "Failed %s: %s", (name, outcome.message)
    if result == "lost":
        return logging.WARNING, "%s was taken away while it ran: %s", (name, outcome.message)
    return logging.INFO, "%s %s in %.3f s", (name, result.capitalize(), outcome.runtime)


def record_crash(crash: Crashed) -> tuple:
    """Record an attempt whose process died or was killed before reporting; return its log line."""
    attempt = crash.attempt
    name = _name(attempt)
    try:
        if crash.kill_reason == "revoked":
            tracker.revoke_task(
                attempt.task_id,
                f"Terminated on request: the handler was {crash.reason}.",
                terminated=True,
                signum=crash.kill_signal,
            )
            return logging.INFO, "Revoked %s: handler terminated", (name,)
        if crash.kill_reason == "paused":
            tracker.give_back_unstarted(
                attempt.task_id, attempt.number, "its queue or task type was paused"
            )
            return logging.INFO, "Gave %s back to the queue: paused before it began", (name,)
        if crash.kill_reason == "cold stop":
            tracker.reenqueue_task(
                attempt.task_id,
                f"Re-enqueued: atpd cold stop (the handler {crash.reason}).",
                attempt=attempt.number,
            )
            return logging.INFO, "Re-enqueued %s after cold stop", (name,)
        cause = crash.kill_reason or f"the handler's process {crash.reason}"
        action = tracker.restart_or_fail(
            attempt.task_id,
            f"Attempt {attempt.number} ended: {cause}.",
            attempt=attempt.number,
            exception=_exception_of(crash.kill_reason),
        )
        return logging.WARNING, "%s %s: %s", (name, action, cause)
    except TASK_GONE as exc:
        return logging.WARNING, "%s: outcome not recorded: %s", (name, exc)


def _exception_of(kill_reason: str) -> str:
    """The exception a crashed attempt is recorded with: why its handler stopped."""
    if not kill_reason:
        return "WorkerLostError"
    return "TimeoutError" if kill_reason.startswith(SILENT) else "TimeLimitExceeded"


def _name(attempt) -> str:
    """How the log lines name an attempt's task."""
    return f"{attempt.type}::{attempt.identifier} (id {attempt.task_id})"
