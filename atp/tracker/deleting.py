"""Deleting tasks: one way for every caller, so a deleted subtask still counts in its parent."""

import logging

from django.db import transaction

from atp.models import TERMINAL, TaskInstance
from atp.tracker import subtasks
from atp.tracker.core import _get_type

logger = logging.getLogger("atp.tracker")


def delete_task(task_id) -> bool:
    """Delete a task with its log and response; a missing task is a no-op (returns False).

    A subtask that had not ended counts as REVOKED (skipped) in its parent's roll-up, in
    the same transaction, so its parent does not wait for it for ever.
    """
    try:
        return bool(delete_tasks(TaskInstance.objects.filter(pk=task_id)))
    except (ValueError, TypeError):  # not an id at all: no such task either
        return False


def delete_task_by_identifier(type, identifier) -> bool:
    """Delete the task ``identifier`` of ``type``; unknown type raises, missing task is a no-op."""
    return bool(
        delete_tasks(TaskInstance.objects.filter(type=_get_type(type), identifier=identifier))
    )


def delete_tasks(tasks) -> int:
    """Delete the tasks of the QuerySet ``tasks`` (logs and responses too); return how many.

    The rows are locked first (in id order, as every batch locks), then each subtask among
    them that had not ended is counted into its parent as REVOKED (``atp.tracker.
    subtasks.subtask_deleted``), unless the parent goes too.
    """
    with transaction.atomic():
        doomed = list(tasks.select_for_update(of=("self",)).select_related("type").order_by("pk"))
        ids = {task.pk for task in doomed}
        for task in doomed:
            if task.parent_id is not None and task.parent_id not in ids:
                if task.status not in TERMINAL:
                    subtasks.subtask_deleted(task)
        TaskInstance.objects.filter(pk__in=ids).delete()
    if doomed:
        logger.debug("Deleted %d task(s)", len(doomed))
    return len(doomed)
