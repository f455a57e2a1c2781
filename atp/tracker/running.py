"""An attempt's transitions: start, pause, resume, wait for subtasks, finish, fail, revoke."""

import json

from django.db import transaction
from django.utils import timezone

from atp import events, sql
from atp.exceptions import InvalidTransition, StaleAttempt
from atp.models import LogRecord, Status, TaskInstance
from atp.tracker import batch_sql
from atp.tracker.core import Attempt, _attempt_of, _check_owner, _ended, _log, _transition
from atp.tracker.results import NO_RESULT, stored_result


def begin_attempt(task_id, message="", *, server_id=None) -> Attempt:
    """Start a claimed task (SCHEDULED → RUNNING), count the attempt and return it.

    ``server_id``, when given, must be the daemon that claimed the task (else StaleAttempt).
    """
    task = _transition(
        task_id,
        Status.RUNNING,
        message,
        server_id=server_id,
        sources={Status.SCHEDULED},
        event=events.TASK_STARTED,
        changes=lambda task: {"attempts": task.attempts + 1, "started_at": timezone.now()},
    )
    return _attempt_of(task)


def start_task(task_id, message="", *, server_id=None):
    """Start a claimed task (SCHEDULED → RUNNING), count the attempt, and return its input."""
    return begin_attempt(task_id, message, server_id=server_id).input


def stop_task_success(
    task_id, message="", *, attempt=None, result=None, result_repr=None, result_json=None
):
    """End a task as FINISHED.

    ``result`` is the handler's return value: stored as the task's JSON ``result`` when it
    is JSON, and its repr in the event (Celery's ``result``). A worker whose result crossed
    a process pipe passes ``result_repr`` and ``result_json`` (its JSON text, or None).
    """
    stored = (
        stored_result(result, result_json)
        if result_repr is None
        else (stored_result(result_json=result_json))
    )
    _finish(task_id, message, attempt, _repr_of(result, result_repr), stored)


def _repr_of(result, result_repr) -> str:
    return result_repr if result_repr is not None else repr(result)


def _finish(task_id, message, attempt, result_repr, stored=NO_RESULT, sources=None) -> None:
    _transition(
        task_id,
        Status.FINISHED,
        message,
        attempt=attempt,
        sources=sources,
        changes=(lambda task: {}) if stored is NO_RESULT else (lambda task: {"result": stored}),
        fields=lambda task, moment: {
            "result": result_repr,
            "runtime": events.runtime_of(task, moment),
        },
    )


def stop_task_success_if_not_finished(
    task_id, message="", *, attempt=None, result=None, result_repr=None, result_json=None
) -> bool:
    """End a RUNNING or PAUSED task as FINISHED; leave any other status alone.

    This is what a worker calls after a handler returns: a handler that already ended its
    task, re-enqueued it (retry) or handed it to its subtasks (WAITING) keeps that status.
    Returns whether the task was changed.
    """
    try:
        # Not WAITING: such a task ends when its subtasks do, not when its handler returns.
        _finish(
            task_id,
            message,
            attempt,
            _repr_of(result, result_repr),
            stored_result(result, result_json)
            if result_repr is None
            else (stored_result(result_json=result_json)),
            sources={Status.RUNNING, Status.PAUSED},
        )
    except InvalidTransition:
        return False
    return True


def finish_tasks(successes) -> dict[int, str]:
    """End many tasks whose handlers returned, as FINISHED, in one transaction.

    ``successes`` are ``(task_id, attempt, result_repr)`` triples, or quadruples with the
    result's JSON text (or None) last. Each gets the rules of
    ``stop_task_success_if_not_finished``; the batch costs three statements (lock, update,
    log) instead of three per task. Returns ``{task_id: "finished" | "revoked" |
    "unchanged" | "lost"}`` ("lost": the attempt is stale; nothing written for it).
    """
    successes = [(*success, None)[:4] for success in successes]
    outcome: dict[int, str] = {}
    if not successes:
        return outcome
    # No savepoint inside the caller's transaction (the daemon's loop): it would cost two
    # round trips per batch, and nothing here catches an error and goes on: any error
    # fails the caller's whole transaction anyway.
    with transaction.atomic(savepoint=False):
        if sql.is_postgresql():
            # The plain cases in one statement; the rest below, one judgement each.
            outcome = batch_sql.finish(successes, timezone.now())
            successes = [success for success in successes if success[0] not in outcome]
            if not successes:
                return outcome
        locked = (
            TaskInstance.objects.select_for_update(of=("self",))
            .select_related("type")
            .filter(pk__in=[success[0] for success in successes])
            .order_by("pk")  # one lock order for every batch: no deadlock between batches
        )
        tasks = {task.pk: task for task in locked}
        done = []
        for task_id, attempt, result_repr, result_json in successes:
            task = tasks.get(task_id)
            try:
                if task is not None:
                    _check_owner(task, attempt, None)
            except StaleAttempt:
                outcome[task_id] = "lost"
                continue
            if task is None or task.status not in (Status.RUNNING, Status.PAUSED):
                outcome[task_id] = "unchanged"
            elif task.abort_requested_at is not None or task.kill_signal is not None:
                # An abort or a terminate request wins: the one-task path judges it.
                stored = stored_result(result_json=result_json)
                _finish(task_id, "", attempt, result_repr, stored, sources={task.status})
                outcome[task_id] = "revoked"
            else:
                done.append((task, result_repr, result_json))
        if done:
            now = timezone.now()
            for task, _, result_json in done:
                if result_json is not None:
                    task.result = json.loads(result_json)
            TaskInstance.objects.filter(pk__in=[task.pk for task, _, _ in done]).update(
                status=Status.FINISHED, finished_at=now, updated_at=now
            )
            with_results = [task for task, _, result_json in done if result_json is not None]
            if with_results:
                TaskInstance.objects.bulk_update(with_results, ["result"])
            records = []
            for task, result_repr, _ in done:
                runtime = events.runtime_of(task, now)
                task.status, task.finished_at, task.updated_at = Status.FINISHED, now, now
                records.append(
                    _log(
                        task,
                        Status.FINISHED,
                        "",
                        events.TASK_SUCCEEDED,
                        now,
                        result=result_repr,
                        runtime=runtime,
                    )
                )
                outcome[task.pk] = "finished"
            LogRecord.objects.bulk_create(records)
            for task, _, _ in done:
                _ended(task)
    return outcome


def stop_task_failure(task_id, message="", *, attempt=None, exception=None, traceback="") -> None:
    """End a task as FAILED, recording the exception's repr and traceback in its event."""
    _transition(
        task_id,
        Status.FAILED,
        message,
        attempt=attempt,
        fields=lambda task, moment: {
            "exception": exception if exception is not None else message,
            "traceback": traceback,
        },
    )


def pause_task(task_id, message="", *, attempt=None) -> None:
    """Pause a running task (RUNNING → PAUSED)."""
    _transition(task_id, Status.PAUSED, message, attempt=attempt)


def resume_task(task_id, message="", *, attempt=None) -> None:
    """Resume a paused task (PAUSED → RUNNING); sends ``task-resumed``, not ``task-started``."""
    _transition(
        task_id,
        Status.RUNNING,
        message,
        attempt=attempt,
        sources={Status.PAUSED},
        event=events.TASK_RESUMED,
    )


def wait_for_subtasks(task_id, message="", *, attempt=None) -> None:
    """Mark a task whose handler returned as waiting for its subtasks (RUNNING → WAITING)."""
    _transition(task_id, Status.WAITING, message, attempt=attempt)


def revoke_task(task_id, message="", *, terminated=False, signum=None, expired=False) -> None:
    """Cancel a task that has not ended (→ REVOKED); a waiting one will never run."""
    _transition(
        task_id,
        Status.REVOKED,
        message,
        fields=lambda task, moment: events.revoked_fields(terminated, signum, expired),
    )
