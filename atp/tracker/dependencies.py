"""Dependencies between tasks: a task runs only after the tasks it names have ended.

A task enqueued with ``depends_on=[ids]`` is BLOCKED (never claimed) until its last
dependency FINISHES; then it becomes ACCEPTED, in the transaction that ended that
dependency. When a dependency ends FAILED or REVOKED, the task ends REVOKED with a message
naming it (``on_dependency_failure="revoke"``, the default) or is released once all its
dependencies have ended anyway (``"run"``).

Locking: the enqueue locks the dependency rows (``FOR UPDATE``, in id order) before it
reads their statuses and sets their ``has_dependents`` flag; every terminal transition of a
task locks its row too. So a dependency either ended before the enqueue looked (and the
enqueue applies the outcome at once) or ends after, and then sees ``has_dependents`` and
releases its dependents. Dependents are locked in id order as well, so two dependencies
ending at once wait for each other on the dependent's row instead of both missing the
last release: the second sees the first's committed end when it gets the lock.

Cycles cannot exist: a task can only name tasks that exist already.
"""

import logging

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from atp import events, sql, validation
from atp.exceptions import InvalidInput
from atp.models import TERMINAL, Dependency, Status, TaskInstance
from atp.tracker import pending
from atp.tracker.core import _log, _subtask_ended

logger = logging.getLogger("atp.tracker")

#: The two answers to "a dependency failed or was revoked".
POLICIES = ("revoke", "run")

#: Statuses that count as a failed dependency.
FAILED = frozenset({Status.FAILED, Status.REVOKED})


def clean(depends_on, policy, where: str) -> tuple[list[int], str]:
    """Check ``depends_on`` (a list of task ids) and ``on_dependency_failure``.

    Returns the ids (as ints, duplicates removed, order kept) and the policy. Raises
    InvalidInput naming the field; whether the ids are tasks is checked at enqueue.
    """
    policy = "revoke" if policy is None else policy
    if policy not in POLICIES:
        raise InvalidInput(
            f"on_dependency_failure of {where} must be one of {list(POLICIES)}, not {policy!r}"
        )
    if depends_on is None:
        return [], policy
    if isinstance(depends_on, (str, bytes, dict)) or not hasattr(depends_on, "__iter__"):
        raise InvalidInput(f"depends_on of {where} must be a list of task ids, not {depends_on!r}")
    ids = []
    for task_id in depends_on:
        task_id = validation.integer(task_id, "depends_on", minimum=1)
        if task_id not in ids:
            ids.append(task_id)
    return ids, policy


def lock_dependencies(ids: list[int], where: str) -> dict[int, TaskInstance]:
    """Lock the dependency rows in id order and return them by id; InvalidInput if one is
    not a task. Call inside the enqueue's transaction."""
    found = {
        task.pk: task
        for task in TaskInstance.objects.select_for_update(of=("self",))
        .filter(pk__in=ids)
        .order_by("pk")
        .only("pk", "status", "uuid", "has_dependents", "identifier", "type_id")
    }
    missing = [task_id for task_id in ids if task_id not in found]
    if missing:
        raise InvalidInput(f"depends_on of {where} names no task: {missing}")
    return found


def initial_status(dependencies: dict[int, TaskInstance], policy: str) -> tuple[int, str]:
    """The status a new dependent starts in, and why: BLOCKED, ACCEPTED or REVOKED."""
    failed = [task for task in dependencies.values() if task.status in FAILED]
    if failed and policy == "revoke":
        return Status.REVOKED, _failed_message(failed[0])
    if all(task.status in TERMINAL for task in dependencies.values()):
        return Status.ACCEPTED, ""
    return Status.BLOCKED, ""


def attach(tasks, ids: list[int], dependencies: dict[int, TaskInstance], policy: str) -> None:
    """Write the edges of the just-inserted ``tasks`` and flag their unended dependencies."""
    Dependency.objects.bulk_create(
        Dependency(
            task=task, depends_on_id=task_id, position=position, run_on_failure=policy == "run"
        )
        for task in tasks
        for position, task_id in enumerate(ids)
    )
    unflagged = [
        task.pk
        for task in dependencies.values()
        if task.status not in TERMINAL and not task.has_dependents
    ]
    if unflagged:
        TaskInstance.objects.filter(pk__in=unflagged).update(has_dependents=True)


def sent_lineage(dependencies: dict[int, TaskInstance], ids: list[int], root_uuid) -> dict:
    """Celery's ``parent_id``/``root_id`` of a dependent, plus the uuids it waits for.

    As in a Celery chain: the parent is the (first) task it follows, the root the first
    task of its workflow (``root_uuid``, or the parent when it has no workflow).
    """
    uuids = [str(dependencies[task_id].uuid) for task_id in ids]
    parent = uuids[0] if uuids else None
    return {"parent_id": parent, "root_id": str(root_uuid or parent), "depends_on": uuids}


def dependency_ended(task: TaskInstance) -> None:
    """Release or revoke the dependents of ``task``, which just ended (same transaction).

    Called by the tracker's terminal-transition hook for a task with ``has_dependents``.
    A revoked dependent's own dependents are handled here too, by a work list rather than
    recursion, so a long chain that fails at its head costs no deep stack.
    """
    pending = [task]
    while pending:
        ended = pending.pop()
        for dependent in _blocked_dependents(ended):
            revoked = _decide(dependent)
            if revoked and dependent.has_dependents:
                pending.append(dependent)


def decide_orphaned_dependents() -> int:
    """Decide BLOCKED tasks none of whose dependencies is still unended; return how many.

    Only a deleted dependency (or a row changed behind the tracker's back) leaves such a
    task: the daemon's sweep calls this so nothing waits forever for a task that is gone.
    """
    unended = Dependency.objects.filter(task=OuterRef("pk"), depends_on__isnull=False).exclude(
        depends_on__status__in=TERMINAL
    )
    stuck = list(
        TaskInstance.objects.filter(status=Status.BLOCKED)
        .exclude(Exists(unended))
        .values_list("pk", flat=True)[:1000]
    )
    count = 0
    for task_id in stuck:
        with transaction.atomic():
            dependent = (
                TaskInstance.objects.select_for_update(of=("self",))
                .select_related("type")
                .filter(pk=task_id, status=Status.BLOCKED)
                .first()
            )
            if dependent is not None:
                revoked = _decide(dependent)
                if revoked and dependent.has_dependents:
                    dependency_ended(dependent)
                count += 1
    return count


def results_of(task_id) -> list:
    """The JSON results of ``task_id``'s dependencies, in the order they were given.

    None stands for a dependency without a JSON result (or one that was deleted).
    """
    edges = Dependency.objects.filter(task_id=task_id).order_by("position")
    return list(edges.values_list("depends_on__result", flat=True))


# --- internals -------------------------------------------------------------------------------


def _blocked_dependents(task: TaskInstance) -> list[TaskInstance]:
    """The BLOCKED tasks that wait for ``task``, locked in id order."""
    return list(
        TaskInstance.objects.select_for_update(of=("self",))
        .select_related("type")
        .filter(status=Status.BLOCKED, dependencies__depends_on=task)
        .order_by("pk")
    )


def _decide(dependent: TaskInstance) -> bool:
    """Release or revoke the locked BLOCKED ``dependent`` if its dependencies allow it.

    Returns whether it was revoked.
    """
    edges = list(
        Dependency.objects.filter(task=dependent).values_list(
            "depends_on_id", "depends_on__status", "run_on_failure"
        )
    )
    run_anyway = any(run for _, _, run in edges)
    failed = [
        (task_id, status) for task_id, status, _ in edges if task_id is None or status in FAILED
    ]
    if failed and not run_anyway:
        task_id, status = failed[0]
        _revoke(dependent, _failed_message_of(task_id, status))
        return True
    if any(task_id is not None and status not in TERMINAL for task_id, status, _ in edges):
        return False
    _release(dependent, len(edges))
    return False


def _release(task: TaskInstance, count: int) -> None:
    now = timezone.now()
    TaskInstance.objects.filter(pk=task.pk).update(status=Status.ACCEPTED, updated_at=now)
    task.status, task.updated_at = Status.ACCEPTED, now
    # No Celery event: the task was sent already; this record says when it became due.
    _log(task, Status.ACCEPTED, f"Released: its {count} dependencies have ended.", "", now).save()
    pending.after_requeue(task)  # due later, or its queue or type paused meanwhile
    sql.notify_enqueued(task.queue)  # delivered on commit: an idle daemon claims it at once
    logger.debug("Released %s: its dependencies have ended", task)


def _revoke(task: TaskInstance, message: str) -> None:
    now = timezone.now()
    TaskInstance.objects.filter(pk=task.pk).update(
        status=Status.REVOKED, updated_at=now, finished_at=now
    )
    task.status, task.updated_at, task.finished_at = Status.REVOKED, now, now
    fields = events.revoked_fields(terminated=False, signum=None, expired=False)
    _log(task, Status.REVOKED, message, events.TASK_REVOKED, now, **fields).save()
    if task.parent_id is not None:
        _subtask_ended(task)
    logger.info("Revoked %s: %s", task, message)


def _failed_message(dependency: TaskInstance) -> str:
    return _failed_message_of(dependency.pk, dependency.status)


def _failed_message_of(task_id, status) -> str:
    if task_id is None:
        return "Revoked: a task it depends on was deleted before it ended."
    return f"Revoked: the task it depends on (id {task_id}) ended {Status(status).label}."
