"""Subtasks: a handler fans its work out to many tasks and its task ends when they all have.

The parent's ``progress`` JSON holds the counters a person watches and the subtask table::

    {"action_name": ..., "total": 500, "attempted": 0, "succeeded": 0, "failed": 0,
     "skipped": 0, "retried": 0, "duration_ms": 0, "start_time": 1700000000.0,
     "subtask_type": "mail.send", "subtasks": {"<identifier>": {"status": "ACCEPTED"}, ...}}

Order of writes (each step its own transaction):

1. the table and the zeroed counters are committed on the parent, so no subtask can end
   before the parent knows it;
2. the parent goes WAITING and every subtask is enqueued, in one transaction: daemons see
   the subtasks only once the parent waits for them. WAITING is not ACTIVE, so the zombie
   sweep leaves a parent alone however long its subtasks take.

Every subtask's terminal transition (FINISHED, FAILED, REVOKED, from the tracker's one hook)
updates the parent under ``select_for_update`` in the same transaction. A terminal status is
final, so each subtask is counted exactly once, whatever retries or restarts it went
through; a stale attempt is refused by the tracker's fencing before it can end anything.
The last subtask to end ends the parent: FINISHED if every subtask succeeded, else FAILED.

Queue limit: the subtasks of an admitted parent are not refused by the queue limit (like a
re-enqueue); they are enqueued all at once or not at all, so a parent never waits for
subtasks that were never queued.
"""

import logging
import time
import uuid

from django.db import transaction

from atp import validation
from atp.exceptions import InvalidInput, InvalidTransition
from atp.models import TERMINAL, Status, TaskInstance
from atp.tracker.core import _check_owner, _get_task, _get_type
from atp.tracker.queueing import enqueue_tasks
from atp.tracker.running import stop_task_failure, stop_task_success, wait_for_subtasks

logger = logging.getLogger("atp.subtasks")

#: Counters of the parent's progress, all zero at the start.
COUNTERS = ("attempted", "succeeded", "failed", "skipped", "retried")


def spawn_subtasks(task_id, type, inputs, *, attempt=None, action_name="") -> list[int]:
    """Fan the running task ``task_id`` out to one subtask of ``type`` per item of ``inputs``.

    Commits the parent's subtask table, then (atomically) puts the parent in WAITING and
    enqueues the subtasks with ``parent`` set. Returns the subtask ids. The parent ends
    when its last subtask does. Raises InvalidInput (no inputs, non-JSON input),
    UnknownTaskType, StaleAttempt or InvalidTransition (the task is not RUNNING/PAUSED).
    """
    inputs = list(inputs)
    if not inputs:
        raise InvalidInput("spawn_subtasks needs at least one input")
    task_type = _get_type(type)
    identifiers = [str(uuid.uuid4()) for _ in inputs]
    for identifier, item in zip(identifiers, inputs, strict=True):
        validation.json_input(item, f"subtask {task_type.identifier}::{identifier}")
    with transaction.atomic():
        parent = _get_task(task_id, lock=True)
        _check_owner(parent, attempt, None)
        if parent.status not in (Status.RUNNING, Status.PAUSED):
            raise InvalidTransition(
                f"task {parent} (id {parent.pk}) is {parent.status_name}; only a running task "
                "spawns subtasks"
            )
        parent.progress = {
            "action_name": action_name,
            "total": len(inputs),
            **dict.fromkeys(COUNTERS, 0),
            "duration_ms": 0,
            "start_time": time.time(),
            "subtask_type": task_type.identifier,
            "subtasks": {identifier: {"status": "ACCEPTED"} for identifier in identifiers},
        }
        parent.save(update_fields=["progress"])
    with transaction.atomic():
        wait_for_subtasks(
            task_id, f"Waiting for {len(inputs)} subtask(s) of {task_type}.", attempt=attempt
        )
        ids = enqueue_tasks(
            task_type,
            list(zip(identifiers, inputs, strict=True)),
            f"Subtask of task {task_id}.",
            parent=task_id,
            check_limit=False,
        )
    logger.info("Task %s spawned %d subtask(s) of %s", task_id, len(ids), task_type)
    return ids


def get_progress(task_id) -> dict | None:
    """The task's progress: a parent's counters and subtask table, or ``set_progress``'s dict."""
    return _get_task(task_id).progress


def subtask_ended(task: TaskInstance) -> None:
    """Count the subtask ``task``, which just ended, into its parent; end the parent if last.

    Called by the tracker inside the subtask's terminal transition, so the count and the
    subtask's status commit together. A child the parent's table does not list (enqueued
    with ``parent=`` by hand) or already counted changes nothing.
    """
    parent = TaskInstance.objects.select_for_update(of=("self",)).get(pk=task.parent_id)
    progress = parent.progress or {}
    entry = progress.get("subtasks", {}).get(task.identifier)
    if entry is None or progress.get("subtask_type") != task.type.identifier:
        return
    if entry.get("status") in {Status(s).label for s in TERMINAL}:
        logger.warning("Subtask %s of task %s already counted", task, parent.pk)
        return
    status = Status(task.status)
    entry.update(status=status.label, id=task.pk, attempts=task.attempts, retries=task.retries)
    progress["attempted"] += 1
    progress[
        {Status.FINISHED: "succeeded", Status.FAILED: "failed", Status.REVOKED: "skipped"}[status]
    ] += 1
    progress["retried"] += max(task.attempts - 1, 0)
    # Never backwards: clocks of the machines ending subtasks may disagree.
    elapsed_ms = int((time.time() - progress["start_time"]) * 1000)
    progress["duration_ms"] = max(progress["duration_ms"], elapsed_ms)
    TaskInstance.objects.filter(pk=parent.pk).update(progress=progress)
    ended = progress["succeeded"] + progress["failed"] + progress["skipped"]
    if ended < progress["total"] or parent.status != Status.WAITING:
        return
    summary = (
        f"{progress['succeeded']} of {progress['total']} subtask(s) succeeded, "
        f"{progress['failed']} failed, {progress['skipped']} skipped."
    )
    if progress["succeeded"] == progress["total"]:
        stop_task_success(parent.pk, summary, result=_counts(progress))
    else:
        stop_task_failure(parent.pk, summary, exception=f"atp.subtasks.SubtasksFailed: {summary}")


def _counts(progress) -> dict:
    return {name: progress[name] for name in ("total", *COUNTERS)}
