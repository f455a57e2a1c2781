"""``TaskStatus``: a running handler's view of its own task."""

from django.db.models import Q

from atp import tracker
from atp.models import Status, TaskInstance


class TaskStatus:
    """What a handler ``handler(task_status, input)`` may read and change about its task.

    Every write carries the attempt number as a fencing token: if the task was given up
    (timed out, its daemon presumed dead) and handed to another worker, the write raises
    ``StaleAttempt`` and the handler should stop.
    Status codes are available as attributes (``TaskStatus.FINISHED``), as in the seed.
    """

    UNDEFINED = Status.UNDEFINED
    ACCEPTED = Status.ACCEPTED
    SCHEDULED = Status.SCHEDULED
    RUNNING = Status.RUNNING
    PAUSED = Status.PAUSED
    FINISHED = Status.FINISHED
    FAILED = Status.FAILED
    REVOKED = Status.REVOKED
    WAITING = Status.WAITING

    def __init__(self, task_id, attempt=None, *, soft_time_limit=None):
        self.task_id = task_id
        self.attempt = attempt
        self.soft_time_limit = soft_time_limit

    def __repr__(self):
        return f"TaskStatus(task_id={self.task_id!r}, attempt={self.attempt!r})"

    def get_info(self) -> tracker.TaskInfo:
        """``(type, identifier, status, status name)`` of the task."""
        return tracker.get_task_info(self.task_id)

    def get_identifier(self) -> str:
        """The task's identifier."""
        return tracker.get_task_identifier(self.task_id)

    def get_status(self) -> tracker.StatusInfo:
        """``(status, status name)`` of the task."""
        return tracker.get_task_status(self.task_id)

    def set_success(self, message="") -> None:
        """End the task as FINISHED."""
        tracker.stop_task_success(self.task_id, message, attempt=self.attempt)

    def set_failure(self, message="") -> None:
        """End the task as FAILED."""
        tracker.stop_task_failure(self.task_id, message, attempt=self.attempt)

    def set_paused(self, message="") -> None:
        """Pause the task (RUNNING → PAUSED)."""
        tracker.pause_task(self.task_id, message, attempt=self.attempt)

    def set_running(self, message="") -> None:
        """Resume the task (PAUSED → RUNNING)."""
        tracker.resume_task(self.task_id, message, attempt=self.attempt)

    def store_response(self, response, mime_type="text/xml") -> None:
        """Store the task's response (bytes or text) with its MIME type."""
        tracker.set_task_response(self.task_id, response, mime_type, attempt=self.attempt)

    def set_progress(self, done, total=None, message="") -> dict:
        """Report progress: ``done`` of ``total`` units, with an optional message."""
        return tracker.set_task_progress(self.task_id, done, total, message, attempt=self.attempt)

    def heartbeat(self) -> None:
        """Tell the zombie sweep this long-running handler is still alive."""
        tracker.heartbeat(self.task_id, attempt=self.attempt)

    def is_aborted(self) -> bool:
        """Whether the task should stop: abort was requested (``control.abort``) or it was revoked.

        A cooperative handler checks this now and then and returns when it turns true; the
        task then ends REVOKED. One cheap query per call.
        """
        return TaskInstance.objects.filter(
            Q(abort_requested_at__isnull=False) | Q(status=Status.REVOKED), pk=self.task_id
        ).exists()
