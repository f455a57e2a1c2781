"""What a running attempt reports without changing its status: heartbeat, response, progress."""

from django.db import transaction
from django.utils import timezone

from atp import events, validation
from atp.exceptions import InvalidInput, InvalidTransition
from atp.models import TERMINAL, Response, Status
from atp.text import storable
from atp.tracker.core import _check_owner, _get_task, _log


def heartbeat(task_id, *, attempt=None) -> None:
    """Tell the zombie sweep a running task is alive (refreshes ``updated_at``).

    Raises StaleAttempt when the attempt was given up, so a worker learns it lost the task.
    """
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        if task.status in TERMINAL:
            raise InvalidTransition(f"task {task} (id {task.pk}) has ended ({task.status_name})")
        task.updated_at = timezone.now()
        task.save(update_fields=["updated_at"])


def set_task_response(task_id, response, mime_type="text/xml", *, attempt=None) -> None:
    """Store (or replace) a task's response: bytes, or text stored as UTF-8, and its MIME type."""
    if isinstance(response, str):
        response = response.encode("utf-8")
    if not isinstance(response, bytes | bytearray | memoryview):
        raise InvalidInput(f"a response must be bytes or str, not {type(response).__name__}")
    if not isinstance(mime_type, str) or "/" not in mime_type:
        raise InvalidInput(f"mime_type must look like 'type/subtype', not {mime_type!r}")
    mime_type = storable(mime_type)
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        # update_or_create sets both fields on update too (the seed's update path wrote
        # ``mineType`` and so never changed the MIME type).
        Response.objects.update_or_create(
            instance=task, defaults={"data": bytes(response), "mime_type": mime_type}
        )


def set_task_progress(task_id, done, total=None, message="", *, attempt=None) -> dict:
    """Record a running task's progress (``done`` of ``total``) and send ``task-progress``.

    Progress is not a transition: the status stays, the log gets one record, and
    ``updated_at`` moves (so reporting progress also keeps the zombie sweep away).
    """
    done = validation.number(done, "done", minimum=0)
    total = validation.number(total, "total", minimum=0, allow_none=True)
    message = storable(message)  # stored in the progress JSON and the log (atp.text)
    progress = {
        "done": done,
        "total": total,
        "percent": round(100.0 * done / total, 2) if total else None,
        "message": message,
    }
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        if task.status not in (Status.RUNNING, Status.PAUSED):
            raise InvalidTransition(
                f"task {task} (id {task.pk}) is {task.status_name}; only a RUNNING or PAUSED "
                "task reports progress"
            )
        moment = timezone.now()
        task.progress, task.updated_at = progress, moment
        task.save(update_fields=["progress", "updated_at"])
        _log(task, task.status, message, events.TASK_PROGRESS, moment, progress=progress).save()
    return progress
