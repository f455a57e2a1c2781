"""``TaskStatus``: a running handler's view of its own task."""

import traceback as traceback_module

from django.db.models import Q

from atp import tracker
from atp.asyncdb import db_call
from atp.exceptions import Retry
from atp.models import Status, TaskInstance
from atp.sql.errors import retry_when_busy
from atp.tracker import retries, subtasks


def _write(function, *args, **kwargs):
    """Run one of ATP's own writes for a handler, retried while the database is busy.

    A lock timeout (SQLite's "database is locked" under concurrent writers) says nothing
    about the handler: it must not fail the attempt and cost the task a restart.
    """
    return retry_when_busy(function)(*args, **kwargs)


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
    BLOCKED = Status.BLOCKED

    def __init__(self, task_id, attempt=None, *, soft_time_limit=None):
        self.task_id = task_id
        self.attempt = attempt
        self.soft_time_limit = soft_time_limit

    def __repr__(self):
        return f"TaskStatus(task_id={self.task_id!r}, attempt={self.attempt!r})"

    def get_info(self) -> tracker.TaskInfo:
        """``(type, identifier, status, status name)`` of the task."""
        return tracker.get_task_info(self.task_id)

    def get_identifier(self) -> tracker.TaskIdentifier:
        """``(type identifier, task identifier)`` of the task, as the seed's getIdentifier."""
        return tracker.get_task_identifier(self.task_id)

    def get_status(self) -> tracker.StatusInfo:
        """``(status, status name)`` of the task."""
        return tracker.get_task_status(self.task_id)

    def set_success(self, message="") -> None:
        """End the task as FINISHED (not once it waits for subtasks: InvalidTransition)."""
        _write(tracker.stop_task_success, self.task_id, message, attempt=self.attempt)

    def set_failure(self, message="") -> None:
        """End the task as FAILED."""
        _write(tracker.stop_task_failure, self.task_id, message, attempt=self.attempt)

    def set_paused(self, message="") -> None:
        """Pause the task (RUNNING → PAUSED)."""
        _write(tracker.pause_task, self.task_id, message, attempt=self.attempt)

    def set_running(self, message="") -> None:
        """Resume the task (PAUSED → RUNNING)."""
        _write(tracker.resume_task, self.task_id, message, attempt=self.attempt)

    def store_response(self, response, mime_type="text/xml") -> None:
        """Store the task's response (bytes or text) with its MIME type."""
        _write(tracker.set_task_response, self.task_id, response, mime_type, attempt=self.attempt)

    def set_progress(self, done, total=None, message="") -> dict:
        """Report progress: ``done`` of ``total`` units, with an optional message."""
        return _write(
            tracker.set_task_progress, self.task_id, done, total, message, attempt=self.attempt
        )

    def heartbeat(self) -> None:
        """Tell the zombie sweep this long-running handler is still alive."""
        _write(tracker.heartbeat, self.task_id, attempt=self.attempt)

    def retry(self, countdown=None, exc=None):
        """Run this task again later, and stop the handler (raises ``Retry``).

        The delay is ``countdown`` seconds, or the type's exponential backoff
        (``retry_backoff`` × 2**retries with jitter, capped at ``retry_backoff_max``).
        Past the type's ``max_retries`` the task FAILS instead. ``exc``, the error that made
        the handler give up, goes into the ``task-retried`` (or ``task-failed``) event.
        Call it as ``raise task_status.retry(...)`` or plainly: it always raises.
        """
        trace = "".join(traceback_module.format_exception(exc)) if exc is not None else ""
        action, delay = _write(
            retries.retry_or_fail,
            self.task_id,
            attempt=self.attempt,
            countdown=countdown,
            exception=retries.describe(exc),
            traceback=trace,
        )
        if action == "failed":
            raise Retry(f"task {self.task_id}: max_retries used up; it failed", failed=True)
        raise Retry(f"task {self.task_id} retries in {delay:.3f} s", delay=delay)

    def spawn_subtasks(self, type, inputs, action_name="") -> list[int]:
        """Fan out: one subtask of ``type`` per item of ``inputs``; this task then WAITS.

        The task ends when its last subtask does: FINISHED if all succeeded, else FAILED,
        with the counts in its progress (``get_progress``). Returns the subtask ids. The
        handler should return soon after; it can no longer change its task's status.
        """
        return _write(
            subtasks.spawn_subtasks,
            self.task_id,
            type,
            inputs,
            attempt=self.attempt,
            action_name=action_name,
        )

    def add_item_counts(self, *, attempted=None, succeeded=0, failed=0, skipped=0) -> dict:
        """Report items this subtask processed; they add up on its parent, atomically.

        edX's ``increment_subtask_status``: ``attempted`` defaults to ``succeeded + failed``.
        The parent's ``progress["items"]`` holds the totals, each subtask's entry its own
        counts (a restarted subtask's earlier attempt stops counting). Returns this
        subtask's counts so far. Only for a subtask its parent spawned (else InvalidInput).
        """
        return subtasks.add_item_counts(
            self.task_id,
            attempt=self.attempt,
            attempted=attempted,
            succeeded=succeeded,
            failed=failed,
            skipped=skipped,
        )

    def dependency_results(self) -> list:
        """The JSON results of the tasks this one depends on, in the order they were given.

        None stands for a dependency without a JSON result. Empty for a task without
        dependencies (``enqueue_task(..., depends_on=[...])``, ``atp.workflows``).
        """
        return tracker.results_of(self.task_id)

    def get_progress(self) -> dict | None:
        """This task's progress (``set_progress``'s dict, or a parent's subtask counters)."""
        return subtasks.get_progress(self.task_id)

    def is_aborted(self) -> bool:
        """Whether the task should stop: abort was requested (``control.abort``) or it was revoked.

        A cooperative handler checks this now and then and returns when it turns true; the
        task then ends REVOKED. One cheap query per call.
        """
        return TaskInstance.objects.filter(
            Q(abort_requested_at__isnull=False) | Q(status=Status.REVOKED), pk=self.task_id
        ).exists()

    # --- for async handlers: the same calls, awaited --------------------------------------
    # Django refuses ORM calls from a thread that runs an event loop, so an ``async def``
    # handler awaits these instead; each runs its sync twin on the loop's database threads
    # (atp.asyncdb.db_call), so handlers share a few connections.

    async def aget_info(self) -> tracker.TaskInfo:
        """``get_info``, for async handlers."""
        return await _db_call(self.get_info)

    async def aget_status(self) -> tracker.StatusInfo:
        """``get_status``, for async handlers."""
        return await _db_call(self.get_status)

    async def aset_success(self, message="") -> None:
        """``set_success``, for async handlers."""
        await _db_call(self.set_success, message)

    async def aset_failure(self, message="") -> None:
        """``set_failure``, for async handlers."""
        await _db_call(self.set_failure, message)

    async def aset_paused(self, message="") -> None:
        """``set_paused``, for async handlers."""
        await _db_call(self.set_paused, message)

    async def aset_running(self, message="") -> None:
        """``set_running``, for async handlers."""
        await _db_call(self.set_running, message)

    async def astore_response(self, response, mime_type="text/xml") -> None:
        """``store_response``, for async handlers."""
        await _db_call(self.store_response, response, mime_type)

    async def aset_progress(self, done, total=None, message="") -> dict:
        """``set_progress``, for async handlers."""
        return await _db_call(self.set_progress, done, total, message)

    async def aheartbeat(self) -> None:
        """``heartbeat``, for async handlers."""
        await _db_call(self.heartbeat)

    async def aretry(self, countdown=None, exc=None):
        """``retry``, for async handlers (raises ``Retry`` like it)."""
        await _db_call(self.retry, countdown, exc)

    async def aspawn_subtasks(self, type, inputs, action_name="") -> list[int]:
        """``spawn_subtasks``, for async handlers."""
        return await _db_call(self.spawn_subtasks, type, inputs, action_name)

    async def aget_progress(self) -> dict | None:
        """``get_progress``, for async handlers."""
        return await _db_call(self.get_progress)

    async def ais_aborted(self) -> bool:
        """``is_aborted``, for async handlers."""
        return await _db_call(self.is_aborted)


async def _db_call(function, *args):
    return await db_call(function, *args)
