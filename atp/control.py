"""Acting on tasks from Python: run, wait for results, abort, revoke, limit rates and times,
pause and resume queues and task types.

This is the database side of Flower's task control. Celery sends these commands to workers
over the broker; ATP writes them to the database, where the claim (rate limits), the
runner (abort) and the daemon (revoke with ``terminate``) pick them up; the claim also reads
the pauses.
"""

import ast
import json
import signal as signal_module
import time
from dataclasses import dataclass, replace

from django.db import transaction

from atp import tracker, validation
from atp.exceptions import InvalidInput, TaskNotFound
from atp.models import TERMINAL, Status, TaskInstance
from atp.query import OUTCOME_EVENTS, task_lookup
from atp.query.states import state_name

#: Polling of ``get_result``/``apply``: first delay, growth factor and cap, in seconds.
POLL_FIRST, POLL_FACTOR, POLL_MAX = 0.05, 1.5, 0.5
#: Longest result repr ``get_result`` tries to turn back into a value.
MAX_LITERAL_LENGTH = 1_000_000


@dataclass(frozen=True)
class TaskResult:
    """A task's state and, once it ended, its outcome (like Celery's ``AsyncResult``).

    ``result`` is the handler's return value when it is a plain literal (a number, string,
    list, dict…), else the repr text the tracker recorded (Celery events carry reprs).
    """

    id: int
    uuid: str
    state: str
    status: str
    result: object = None
    exception: str | None = None
    traceback: str | None = None
    #: False when a ``unique_key`` was held: the call created nothing, this is the holder.
    created: bool = True

    @property
    def ready(self) -> bool:
        """Whether the task has ended (SUCCESS, FAILURE or REVOKED)."""
        return Status[self.status] in TERMINAL

    @property
    def successful(self) -> bool:
        """Whether the task ended successfully."""
        return self.status == Status.FINISHED.label

    def as_flower(self) -> dict:
        """Flower's result reply: task-id and state, plus result (and traceback) once ready."""
        reply: dict[str, object] = {"task-id": self.uuid, "state": self.state}
        if self.ready:
            reply["result"] = self.exception if self.state == "FAILURE" else self.result
            if self.state == "FAILURE":
                reply["traceback"] = self.traceback
        return reply


# --- running tasks ----------------------------------------------------------------------


def async_apply(type, input=None, identifier=None, message="", **options) -> TaskResult:
    """Enqueue a task and return at once with its (PENDING) state.

    ``type`` is a task type identifier (or TaskType); ``options`` are ``enqueue_task``'s:
    priority, queue, run_after/eta, countdown, expires, parent, unique_key, unique_for,
    concurrency_key. With a ``unique_key`` a task holds, nothing is created and the result
    is the holder's (``created`` False). Raises UnknownTaskType, InvalidInput, DuplicateTask
    or QueueFull.
    """
    unique_key = options.pop("unique_key", None)
    # One transaction: if reading the new task back fails, it was never enqueued.
    with transaction.atomic():
        created = True
        if unique_key is None:
            task_id = tracker.enqueue_task(type, identifier, input, message, **options)
        else:
            task_id, created = tracker.enqueue_unique(
                type, identifier, input, message, unique_key=unique_key, **options
            )
        return replace(_result(TaskInstance.objects.get(pk=task_id)), created=created)


def send_task(name, input=None, identifier=None, message="", **options) -> TaskResult:
    """Enqueue a task by its type's name (no handler import needed); as ``async_apply``."""
    if not isinstance(name, str):
        raise InvalidInput(f"send_task takes a task type name, not {name!r}")
    return async_apply(name, input, identifier, message, **options)


def apply(type, input=None, timeout=None, identifier=None, message="", **options) -> TaskResult:
    """Enqueue a task and wait until a daemon has run it; return its result.

    Waits at most ``timeout`` seconds (None: until the task ends). If it has not ended by
    then, the returned result is not ``ready`` (the task stays queued or running).
    """
    timeout = validation.seconds(timeout, "timeout", allow_none=True)
    started = async_apply(type, input, identifier, message, **options)
    return replace(_wait(started.id, timeout), created=started.created)


def get_result(task_id, timeout=None) -> TaskResult:
    """The state and outcome of a task (by id or uuid), waiting up to ``timeout`` seconds.

    With ``timeout`` None or 0 it returns at once (as Flower's result endpoint does).
    Raises TaskNotFound.
    """
    timeout = validation.seconds(timeout, "timeout", allow_none=True)
    return _wait(_task(task_id).pk, timeout or 0.0)


def _wait(task_id: int, timeout: float | None) -> TaskResult:
    """Poll the task's status until it ends or ``timeout`` seconds pass (None: forever)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = POLL_FIRST
    while True:
        task = _task(task_id)
        remaining = None if deadline is None else deadline - time.monotonic()
        if task.status in TERMINAL or (remaining is not None and remaining <= 0):
            return _result(task)
        time.sleep(delay if remaining is None else min(delay, remaining))
        delay = min(delay * POLL_FACTOR, POLL_MAX)


def _task(task_id) -> TaskInstance:
    lookup = task_lookup(task_id)
    task = TaskInstance.objects.filter(**lookup).first() if lookup else None
    if task is None:
        raise TaskNotFound(f"no task with id or uuid {task_id!r}")
    return task


def _result(task: TaskInstance) -> TaskResult:
    outcome: dict = {}
    if task.status in TERMINAL:
        record = task.log.filter(event__in=OUTCOME_EVENTS).order_by("-time", "-id").first()
        outcome = record.fields if record else {}
    failed = task.status == Status.FAILED
    return TaskResult(
        id=task.pk,
        uuid=str(task.uuid),
        state=state_name(task.status),
        status=Status(task.status).label,
        result=_result_value(task, outcome),
        exception=outcome.get("exception") if failed else None,
        traceback=outcome.get("traceback") if failed else None,
    )


def _result_value(task: TaskInstance, outcome: dict):
    """A task's result: its stored JSON result, else what the event's repr spells."""
    if task.result is not None:
        return task.result
    return _value(outcome["result"]) if "result" in outcome else None


def _value(text):
    """The value a result repr spells, if it is a JSON-able literal; else the repr itself.

    ``ast.literal_eval`` only reads literals (it never runs code), and only reprs of plain
    values are literals, so ``"{'a': 1}"`` gives back ``{'a': 1}`` and ``"<object …>"`` stays.
    """
    if not isinstance(text, str) or len(text) > MAX_LITERAL_LENGTH:
        return text
    try:
        value = ast.literal_eval(text)
        json.dumps(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    return value


# --- stopping tasks -----------------------------------------------------------------------


def abort(task_id) -> bool:
    """Ask a task to stop; return False if it had already ended.

    A RUNNING or PAUSED task is asked to stop: ``TaskStatus.is_aborted()`` turns true, and
    when its handler returns the task ends REVOKED (cooperative, as Celery's
    AbortableTask). A task that has not started (or waits for subtasks) is revoked now.
    """
    return tracker.abort_task(_task(task_id).pk) != tracker.Stopped.ENDED


def revoke(task_id, terminate=False, signal="SIGTERM") -> bool:
    """Cancel a task; return False if it had already ended.

    A task that has not started is REVOKED now and never runs. A RUNNING or PAUSED task is
    REVOKED now as well (its handler's later writes are refused), unless ``terminate`` is
    true: then the daemon running it is asked to send its handler ``signal`` (a name such
    as ``"SIGTERM"``/``"KILL"`` or a number) and end the task REVOKED.
    """
    signum = signal_number(signal)
    outcome = tracker.cancel_task(
        _task(task_id).pk, "on request", terminate=terminate, signum=signum
    )
    return outcome != tracker.Stopped.ENDED


def signal_number(signal) -> int:
    """A signal's number from its name (``"SIGTERM"``, ``"term"``) or number; else InvalidInput."""
    digits = validation.ascii_int(signal)
    if isinstance(signal, int) and not isinstance(signal, bool):
        number = signal
    elif digits is not None:
        number = digits
    elif isinstance(signal, str):
        name = signal.strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        member = getattr(signal_module.Signals, name, None)
        if member is None:
            raise InvalidInput(f"unknown signal {signal!r}; use a name such as 'SIGTERM'")
        number = member.value
    else:
        raise InvalidInput(f"signal must be a name or number, not {signal!r}")
    if number not in set(signal_module.valid_signals()):
        raise InvalidInput(f"{number} is not a valid signal number")
    return tracker.check_kill_signal(number)


# --- task type limits -----------------------------------------------------------------------


def rate_limit(type, rate) -> str:
    """Set a task type's rate limit (``"10/m"``, per s, m or h; ``""``/None: none).

    As in Celery, a bare number is per second and a rate of 0 means no limit. Enforced when
    daemons claim tasks, across all daemons. Returns the stored rate.
    """
    if isinstance(rate, int) and not isinstance(rate, bool):
        rate = f"{rate}/s"
    elif validation.ascii_int(rate) is not None:
        rate = f"{validation.ascii_int(rate)}/s"
    rate = validation.rate(rate)
    if rate.startswith("0/"):
        rate = ""
    tracker.update_task_type(type, rate_limit=rate)
    return rate


def set_timeouts(type, soft=None, hard=None) -> tuple[float | None, float | None]:
    """Set a task type's soft and hard time limits in seconds (None: no limit), as Celery does.

    Both are set at once; the soft limit must be below the hard one. Returns them.
    """
    soft = validation.seconds(soft, "soft", exclusive=True, allow_none=True)
    hard = validation.seconds(hard, "hard", exclusive=True, allow_none=True)
    if soft is not None and hard is not None and soft >= hard:
        raise InvalidInput(
            f"the soft time limit ({soft:g} s) must be below the hard one ({hard:g} s)"
        )
    tracker.update_task_type(type, soft_time_limit=soft, hard_time_limit=hard)
    return soft, hard


# --- pausing queues and task types (atp.tracker.pausing) -----------------------------------


def pause_queue(name) -> bool:
    """Stop every daemon from starting tasks of queue ``name``; running tasks finish.

    Its tasks stay ACCEPTED. A queue may be paused before its first task exists. Returns
    False if it was paused already. Raises InvalidInput for an empty or too long name.
    """
    return tracker.pause_queue(name)


def resume_queue(name) -> bool:
    """Let daemons start tasks of queue ``name`` again; False if it was not paused."""
    return tracker.resume_queue(name)


def pause_task_type(type) -> bool:
    """Stop every daemon from starting tasks of a type; False if it was paused already.

    Raises InvalidInput naming the type when no such type is registered.
    """
    return tracker.pause_task_type(type)


def resume_task_type(type) -> bool:
    """Let daemons start tasks of a type again; False if it was not paused."""
    return tracker.resume_task_type(type)
