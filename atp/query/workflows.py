"""Workflows as one thing: the state, counts and progress of a chain, group or chord."""

from django.db.models import Count

from atp.exceptions import TaskNotFound
from atp.models import TERMINAL, Status, TaskInstance, Workflow


def workflow_state(workflow_id) -> dict:
    """A workflow as one thing: ``state`` (running / succeeded / failed), counts, progress.

    The workflow runs while any of its tasks has not ended; then it succeeded if its end
    task(s) FINISHED, else it failed.
    """
    try:
        workflow = Workflow.objects.get(pk=workflow_id)
    except (Workflow.DoesNotExist, ValueError, TypeError):
        raise TaskNotFound(f"no workflow with id {workflow_id!r}") from None
    counts = {Status(status).label: count for status, count in _status_counts(workflow)}
    total = sum(counts.values())
    ended = sum(counts.get(Status(status).label, 0) for status in TERMINAL)
    if ended < total:
        state = "running"
    else:
        ends = _end_statuses(workflow)
        state = "succeeded" if ends and all(s == Status.FINISHED for s in ends) else "failed"
    return {
        "id": workflow.pk,
        "uuid": str(workflow.uuid),
        "name": workflow.name,
        "state": state,
        "total": total,
        "ended": ended,
        "progress": ended / total if total else 1.0,
        "counts": counts,
        "end_task_id": workflow.end_task_id,
    }


def _status_counts(workflow):
    return (
        TaskInstance.objects.filter(workflow=workflow)
        .order_by()
        .values_list("status")
        .annotate(count=Count("id"))
    )


def _end_statuses(workflow) -> list[int]:
    if workflow.end_task_id is not None:
        return list(
            TaskInstance.objects.filter(pk=workflow.end_task_id).values_list("status", flat=True)
        )
    # A bare group ends with its members: those no other task of the workflow depends on.
    tasks = TaskInstance.objects.filter(workflow=workflow)
    return list(
        tasks.exclude(dependent_edges__task__workflow=workflow).values_list("status", flat=True)
    )
