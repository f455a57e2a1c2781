"""The ATP handler that runs Django task functions enqueued through ``atp.backends.ATPBackend``.

``atpd`` calls ``run(task_status, input)`` like any other handler; the input names the task
function, its backend and its arguments. The function's return value becomes the task's
response (JSON); an exception it raises fails the task through ATP's runner, which records
the exception's class path and traceback.
"""

import json
import traceback as traceback_module

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from atp.backends import RESULT_MIME_TYPE, ATPBackend
from atp.exceptions import InvalidInput, ReturnValueNotJSON
from atp.tasks_compat import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_finished,
    task_started,
)


def run(task_status, input):
    """Call the task function of ``input`` and store its return value as JSON.

    A function with ``takes_context`` gets a ``TaskContext`` whose ``attempt`` is ATP's
    attempt number. Coroutine functions run to completion in an event loop of their own.
    Returns the (JSON-normalised) return value, which the runner puts in the event.
    """
    from atp.models import TaskInstance

    backend = _backend(input)
    result = backend.result_for(
        TaskInstance.objects.select_related("type").get(pk=task_status.task_id)
    )
    task = result.task
    task_started.send(type(backend), task_result=result)
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
        value = _json_value(value, task.module_path)
    except Exception as exc:
        _finish(result, TaskResultStatus.FAILED, error=exc)
        task_finished.send(type(backend), task_result=result)
        raise
    task_status.store_response(json.dumps(value), RESULT_MIME_TYPE)
    _finish(result, TaskResultStatus.SUCCESSFUL, value=value)
    task_finished.send(type(backend), task_result=result)
    return value


def _backend(input) -> ATPBackend:
    """The ATPBackend the task was enqueued through, from this daemon's TASKS setting."""
    if not isinstance(input, dict) or not input.get("task") or not input.get("backend"):
        raise InvalidInput(
            f"input {input!r} is not a Django task call: it needs 'task' and 'backend' keys "
            "(enqueue Django tasks with task.enqueue(), not tracker.enqueue_task())"
        )
    backend = task_backends[input["backend"]]
    if not isinstance(backend, ATPBackend):
        raise ImproperlyConfigured(
            f"TASKS[{input['backend']!r}] of this atpd is {type(backend).__name__}, not "
            "ATPBackend; give atpd the same TASKS setting as the code that enqueues"
        )
    return backend


def _json_value(value, module_path: str):
    """``value`` normalised to JSON types, or ReturnValueNotJSON naming the task."""
    try:
        value = normalize_json(value)
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ReturnValueNotJSON(
            f"the return value of task {module_path} is not JSON-serialisable ({exc}); ATP "
            "stores it as JSON: return dicts, lists, strings, numbers, booleans or None"
        ) from exc
    return value


def _finish(result, status, *, value=None, error=None) -> None:
    """Bring the in-memory result up to date for the task_finished signal's receivers."""
    # TaskResult is frozen; the framework's own backends update it the same way.
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    if error is not None:
        result.errors.append(
            TaskError(
                exception_class_path=f"{type(error).__module__}.{type(error).__qualname__}",
                traceback="".join(traceback_module.format_exception(error)),
            )
        )
    else:
        object.__setattr__(result, "_return_value", value)
