"""Subtasks: a handler fans its work out to many tasks and its task ends when they all have.

The parent's ``progress`` JSON holds the counters a person watches and the subtask table::

    {"action_name": ..., "total": 500, "attempted": 0, "succeeded": 0, "failed": 0,
     "skipped": 0, "retried": 0, "duration_ms": 0, "start_time": 1700000000.0,
     "items": {"attempted": 0, "succeeded": 0, "failed": 0, "skipped": 0},
     "subtask_type": "mail.send", "subtasks": {"<identifier>": {"status": "ACCEPTED"}, ...}}

``total`` … ``retried`` count subtasks; ``items`` adds up what the subtasks report about
the items they process (``add_item_counts``, edX's ``increment_subtask_status``).

Spawning is one transaction: the table and the zeroed counters on the parent, the parent
RUNNING → WAITING, and every subtask enqueued. It commits whole or not at all (a task that
is not RUNNING, a PAUSED one included, is refused before anything is written), and no
subtask is visible to a daemon, so none can end, before the parent's table is. WAITING is
not ACTIVE, so the zombie sweep leaves a parent alone however long its subtasks take.

Every subtask's terminal transition (FINISHED, FAILED, REVOKED, from the tracker's one
hook) updates the parent under ``select_for_update`` in the same transaction. A terminal
status is final, so each subtask is counted exactly once, whatever retries or restarts it
went through; a stale attempt is refused by the tracker's fencing before it can end
anything. A subtask deleted before it ended counts as REVOKED (skipped), in the delete's
transaction. The last subtask to end ends the parent: FINISHED if every subtask
succeeded, else FAILED; nothing else ends a WAITING parent but a revoke (its handler's
``set_success``/``set_failure`` raise InvalidTransition). ``settle_waiting_parents``, run
by the daemons' and ``atp_cleanup``'s sweeps, ends a parent whose subtasks vanished
without the tracker (a raw SQL delete).

A task enqueued with ``parent=`` set to a task that spawned subtasks must be one its
table lists (else ``InvalidInput``); a ``parent`` without a table is lineage only (Celery's
``parent_id``) and its children are not counted.

Queue limit: the subtasks of an admitted parent are not refused by the queue limit (like a
re-enqueue); they are enqueued all at once or not at all.
"""

import logging
import time
import uuid

from django.db import transaction

from atp import validation
from atp.exceptions import InvalidInput, InvalidTransition
from atp.models import TERMINAL, Status, TaskInstance
from atp.text import storable
from atp.tracker.core import SweepEntry, _check_owner, _get_task, _get_type
from atp.tracker.queueing import enqueue_tasks, has_table, is_listed
from atp.tracker.running import stop_task_failure, stop_task_success, wait_for_subtasks

logger = logging.getLogger("atp.subtasks")

#: Counters of the parent's progress, all zero at the start.
COUNTERS = ("attempted", "succeeded", "failed", "skipped", "retried")
#: Item counters a subtask reports (``add_item_counts``), summed on the parent.
ITEM_COUNTERS = ("attempted", "succeeded", "failed", "skipped")
_ENDED = {Status(status).label for status in TERMINAL}
_COUNTER_OF = {Status.FINISHED: "succeeded", Status.FAILED: "failed", Status.REVOKED: "skipped"}


def spawn_subtasks(task_id, type, inputs, *, attempt=None, action_name="") -> list[int]:
    """Fan the running task ``task_id`` out to one subtask of ``type`` per item of ``inputs``.

    In one transaction: the parent's subtask table, the parent RUNNING → WAITING, and the
    subtasks enqueued with ``parent`` set. Returns the subtask ids. The parent ends when
    its last subtask does. Raises InvalidInput (no inputs, non-JSON input),
    UnknownTaskType, StaleAttempt or InvalidTransition (the task is not RUNNING); any
    error leaves nothing written.
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
        if parent.status != Status.RUNNING:
            # Checked before the first write: a PAUSED task used to get its table written
            # and then fail to go WAITING, listing subtasks that never existed.
            raise InvalidTransition(
                f"task {parent} (id {parent.pk}) is {parent.status_name}; only a RUNNING task "
                "spawns subtasks (resume a paused one first)"
            )
        parent.progress = {
            "action_name": storable(action_name),
            "total": len(inputs),
            **dict.fromkeys(COUNTERS, 0),
            "duration_ms": 0,
            "start_time": time.time(),
            "items": dict.fromkeys(ITEM_COUNTERS, 0),
            "subtask_type": task_type.identifier,
            "subtasks": {identifier: {"status": "ACCEPTED"} for identifier in identifiers},
        }
        parent.save(update_fields=["progress"])
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
    subtask's status commit together.
    """
    _count(task, Status(task.status))


def subtask_deleted(task: TaskInstance) -> None:
    """Count ``task``, a subtask deleted before it ended, as REVOKED (skipped) into its parent.

    Called by the tracker's deletes inside their transaction, with ``task`` locked.
    """
    _count(task, Status.REVOKED, deleted=True)


def _count(task: TaskInstance, status: Status, *, deleted=False) -> None:
    # Lock order: the subtask (locked by the caller), then its parent, as everywhere.
    parent = TaskInstance.objects.select_for_update(of=("self",)).get(pk=task.parent_id)
    listed = is_listed(parent, task.type.identifier, task.identifier)
    if listed is None:
        return  # a plain parent link: lineage only, nothing to count
    if not listed:
        logger.warning("Task %s is not in the subtask table of its parent %s", task, parent.pk)
        return
    progress: dict = parent.progress or {}
    entry = progress["subtasks"][task.identifier]
    if entry.get("status") in _ENDED:
        logger.warning("Subtask %s of task %s already counted", task, parent.pk)
        return
    entry.update(id=task.pk, attempts=task.attempts, retries=task.retries)
    if deleted:
        entry["deleted"] = True
    progress["retried"] += max(task.attempts - 1, 0)
    _record(progress, entry, status)
    _save_and_settle(parent, progress)


def _record(progress: dict, entry: dict, status: Status) -> None:
    """Mark one table entry ended with ``status`` and count it."""
    entry["status"] = status.label
    progress["attempted"] += 1
    progress[_COUNTER_OF[status]] += 1
    # Never backwards: clocks of the machines ending subtasks may disagree.
    elapsed_ms = int((time.time() - progress["start_time"]) * 1000)
    progress["duration_ms"] = max(progress["duration_ms"], elapsed_ms)


def _save_and_settle(parent: TaskInstance, progress: dict) -> str | None:
    """Store the parent's progress; end it if every subtask has ended. Returns how it ended."""
    TaskInstance.objects.filter(pk=parent.pk).update(progress=progress)
    ended = progress["succeeded"] + progress["failed"] + progress["skipped"]
    if ended < progress["total"] or parent.status != Status.WAITING:
        return None
    deleted = sum(1 for entry in progress["subtasks"].values() if entry.get("deleted"))
    summary = (
        f"{progress['succeeded']} of {progress['total']} subtask(s) succeeded, "
        f"{progress['failed']} failed, {progress['skipped']} skipped"
        + (f" ({deleted} deleted)." if deleted else ".")
    )
    if progress["succeeded"] == progress["total"]:
        stop_task_success(parent.pk, summary, result=_counts(progress))
        return "finished"
    stop_task_failure(parent.pk, summary, exception=f"atp.subtasks.SubtasksFailed: {summary}")
    return "failed"


def _counts(progress) -> dict:
    counts = {name: progress[name] for name in ("total", *COUNTERS)}
    if "items" in progress:
        counts["items"] = dict(progress["items"])
    return counts


def settle_waiting_parents() -> list[SweepEntry]:
    """End WAITING parents whose subtasks have all ended or vanished; return them.

    The tracker counts every end and every delete it makes, so this finds only what it
    could not see: subtasks deleted without it (raw SQL, a foreign cascade). Each entry of
    a parent's table whose subtask no longer exists counts as REVOKED (skipped, marked
    ``deleted``); a subtask that ended uncounted is counted. One short transaction per
    parent, skipping parents another sweeper (or a subtask's end) holds. Returns
    ``(id, "type::identifier")`` pairs with ``action`` "finished" or "failed".
    """
    done: list[SweepEntry] = []
    waiting = TaskInstance.objects.filter(status=Status.WAITING).order_by("pk")
    for parent_id in waiting.values_list("pk", flat=True):
        with transaction.atomic():
            parent = (
                TaskInstance.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("type")
                .filter(pk=parent_id, status=Status.WAITING)
                .first()
            )
            if parent is None or not has_table(parent):
                continue
            action = _settle(parent)
        if action:
            done.append(SweepEntry(parent.pk, str(parent), action))
            logger.warning("Subtask parent %s ended by the sweep: %s", parent, action)
    return done


def _settle(parent: TaskInstance) -> str | None:
    progress: dict = parent.progress or {}
    open_entries = [
        identifier
        for identifier, entry in progress["subtasks"].items()
        if entry.get("status") not in _ENDED
    ]
    children = {
        child.identifier: child
        for child in TaskInstance.objects.filter(
            parent_id=parent.pk,
            type__identifier=progress.get("subtask_type"),
            identifier__in=open_entries,
        )
    }
    changed = False
    for identifier in open_entries:
        child, entry = children.get(identifier), progress["subtasks"][identifier]
        if child is None:
            entry["deleted"] = True
            _record(progress, entry, Status.REVOKED)
            changed = True
        elif child.status in TERMINAL:
            entry.update(id=child.pk, attempts=child.attempts, retries=child.retries)
            progress["retried"] += max(child.attempts - 1, 0)
            _record(progress, entry, Status(child.status))
            changed = True
    return _save_and_settle(parent, progress) if changed else None


def add_item_counts(
    task_id, *, attempt=None, attempted=None, succeeded=0, failed=0, skipped=0
) -> dict:
    """Add item counts to the running subtask ``task_id``'s entry and to its parent's totals.

    edX's ``increment_subtask_status``: ``attempted`` defaults to ``succeeded + failed``.
    The subtask's row and then its parent's are locked, so concurrent subtasks never lose
    an update. Counts belong to an attempt: the first report of a restarted subtask takes
    its earlier attempt's counts back off the totals, so they never count twice.
    Returns the subtask's counts so far. Raises InvalidInput (a count that is not a
    non-negative integer, a task that is not a listed subtask), InvalidTransition (the
    subtask is not running) or StaleAttempt.
    """
    counts = {
        name: validation.integer(value, name, minimum=0)
        for name, value in (("succeeded", succeeded), ("failed", failed), ("skipped", skipped))
    }
    counts["attempted"] = (
        counts["succeeded"] + counts["failed"]
        if attempted is None
        else validation.integer(attempted, "attempted", minimum=0)
    )
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        if task.status not in (Status.RUNNING, Status.PAUSED):
            raise InvalidTransition(
                f"task {task} (id {task.pk}) is {task.status_name}; only a running subtask "
                "reports item counts"
            )
        parent = (
            TaskInstance.objects.select_for_update(of=("self",)).filter(pk=task.parent_id).first()
        )
        if parent is None or not is_listed(parent, task.type.identifier, task.identifier):
            raise InvalidInput(
                f"task {task} (id {task.pk}) is not a subtask its parent's table lists; "
                "item counts roll up into a parent that spawned it (spawn_subtasks)"
            )
        progress: dict = parent.progress or {}
        totals = progress.setdefault("items", dict.fromkeys(ITEM_COUNTERS, 0))
        entry = progress["subtasks"][task.identifier]
        mine = entry.get("items") or dict.fromkeys(ITEM_COUNTERS, 0)
        if entry.get("items_attempt") not in (None, task.attempts):
            for name in ITEM_COUNTERS:  # a restarted subtask starts its counts over
                totals[name] -= mine[name]
            mine = dict.fromkeys(ITEM_COUNTERS, 0)
        for name in ITEM_COUNTERS:
            mine[name] += counts[name]
            totals[name] += counts[name]
        entry["items"], entry["items_attempt"] = mine, task.attempts
        TaskInstance.objects.filter(pk=parent.pk).update(progress=progress)
    return dict(mine)
