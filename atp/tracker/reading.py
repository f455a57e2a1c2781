"""Reading tasks, their logs and responses and the queue sizes."""

from django.db.models import Count

from atp.conf import settings
from atp.exceptions import TaskNotFound
from atp.models import Response, Status, TaskInstance, TaskType
from atp.tracker.core import (
    LogEntry,
    StatusInfo,
    TaskIdentifier,
    TaskInfo,
    _get_task,
    _get_task_by_identifier,
    _get_type,
)


def get_queue_size(type=None) -> int:
    """Number of waiting (ACCEPTED) tasks, of all types or of task type ``type``."""
    tasks = TaskInstance.objects.waiting()
    if type is not None:
        tasks = tasks.filter(type=_get_type(type))
    return tasks.count()


def get_max_queue_size(type=None) -> int | None:
    """The waiting-task limit that applies to ``type`` (or the shared one); None = no limit.

    A type with its own ``max_queue_size`` counts only its own waiting tasks against it;
    all other types share ``ATP['MAX_QUEUE_SIZE']``.
    """
    if type is not None:
        task_type = _get_type(type)
        if task_type.max_queue_size is not None:
            return task_type.max_queue_size
    return settings.MAX_QUEUE_SIZE


def get_task_type(type) -> TaskType:
    """The registered TaskType ``type`` (an identifier or a TaskType); raises UnknownTaskType."""
    return _get_type(type)


def get_task_info(task_id) -> TaskInfo:
    """Return ``(type identifier, task identifier, status, status name)`` of a task."""
    task = _get_task(task_id)
    return TaskInfo(task.type.identifier, task.identifier, task.status, task.status_name)


def get_task_identifier(task_id) -> TaskIdentifier:
    """Return ``(type identifier, task identifier)`` of a task, as the seed's getTaskIdentifier."""
    task = _get_task(task_id)
    return TaskIdentifier(task.type.identifier, task.identifier)


def get_task_status(task_id) -> StatusInfo:
    """Return ``(status, status name)`` of a task."""
    task = _get_task(task_id)
    return StatusInfo(task.status, task.status_name)


def get_task_status_by_identifier(type, identifier) -> StatusInfo:
    """Return ``(status, status name)`` of the task ``identifier`` of task type ``type``."""
    task = _get_task_by_identifier(type, identifier)
    return StatusInfo(task.status, task.status_name)


def get_task_response(type, identifier) -> tuple[bytes, str]:
    """Return ``(data, mime type)`` that the task's handler stored."""
    task = _get_task_by_identifier(type, identifier)
    try:
        response = task.response
    except Response.DoesNotExist:
        raise TaskNotFound(f"task {task} has no response (yet)") from None
    return bytes(response.data), response.mime_type


def get_task_log(type, identifier) -> list[LogEntry]:
    """Return the task's history, oldest first, as ``(time, (status, name), message)``."""
    task = _get_task_by_identifier(type, identifier)
    return [
        LogEntry(
            record.time, StatusInfo(record.status, Status(record.status).label), record.message
        )
        for record in task.log.order_by("time", "id")
    ]


def count_by_status() -> dict[str, int]:
    """Number of tasks per status name (all statuses present, zeros included)."""
    counts = dict(TaskInstance.objects.order_by().values_list("status").annotate(n=Count("id")))
    return {status.label: counts.get(status.value, 0) for status in Status}
