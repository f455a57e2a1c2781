"""``ATPBackend``: ATP as a backend of Django's tasks framework.

Configured as ``TASKS = {"default": {"BACKEND": "atp.backends.ATPBackend", "QUEUES": [...],
"OPTIONS": {...}}}``; ``atpd`` runs the tasks. How the framework maps onto ATP:

- A task function becomes an ATP task type on first enqueue. Its identifier is the
  function's module path (shortened with a hash past 64 characters), its handler
  ``atp.django_tasks_handler.run``. An existing type is used as it is, so changes made
  through ATP (timeout, maxrestart, queue limit...) stick; ``OPTIONS`` are the
  ``register_task_type`` arguments new types get.
- One enqueue is one ATP task: input ``{"task", "backend", "takes_context", "run_after",
  "args", "kwargs"}`` (JSON, checked at enqueue), ATP priority = task priority, ATP queue =
  ``queue_name``, ``run_after`` = ``run_after``. The queue-size limit applies (``QueueFull``).
- ATP's flow options of one enqueue (``unique_key``, ``unique_for``, ``concurrency_key``)
  come from ``enqueue_options()``, a context manager: Django's ``Task`` has no field for
  them. A held unique key creates nothing and the result is the holder's.
- The result id is the ATP task's ``uuid``. ATP status → result status: ACCEPTED and
  SCHEDULED → READY; RUNNING, PAUSED and WAITING → RUNNING; FINISHED → SUCCESSFUL; FAILED
  and REVOKED → FAILED. ``worker_ids`` holds the daemon of each start, so ``attempts``
  counts ATP's restarts too; ``errors`` come from the task's ``task-failed`` and
  ``task-revoked`` events; the return value is the task's JSON response.
"""

import builtins
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from django.apps import apps
from django.core import checks
from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from atp import validation
from atp.exceptions import InvalidInput
from atp.tasks_compat import (
    BaseTaskBackend,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
)

#: The ATP handler every task type made by this backend runs.
HANDLER = "atp.django_tasks_handler.run"
#: MIME type of the response that holds a task's return value.
RESULT_MIME_TYPE = "application/json"
#: ``register_task_type`` arguments OPTIONS may give new task types (queue and priority
#: are not among them: they come from each enqueued task).
TYPE_ARGUMENTS = ("timeout", "timeret", "maxrestart")

#: The ATP enqueue options ``enqueue_options`` passes on (Django's ``Task`` carries the others).
FLOW_OPTIONS = ("unique_key", "unique_for", "concurrency_key")


@dataclass
class EnqueueOptions:
    """What ``enqueue_options`` yields: its options, and what the last enqueue in it did."""

    options: dict = field(default_factory=dict)
    #: Whether the last enqueue inside the block created its task (False: a task held the
    #: ``unique_key``, and the result was the holder's); None before the first.
    created: bool | None = None


_FLOW: ContextVar[EnqueueOptions | None] = ContextVar("atp_enqueue_options", default=None)


@contextmanager
def enqueue_options(**options) -> Iterator[EnqueueOptions]:
    """Give the Django tasks enqueued in the block ATP's ``unique_key``, ``unique_for`` and
    ``concurrency_key`` (``enqueue_task``'s rules and checks), in this thread or task only.

    ``with enqueue_options(unique_key="sync-42") as flow: result = sync.enqueue(42)``: while a
    task of the type holds the key, nothing is created, the result is that task's and
    ``flow.created`` is False. An unknown option is InvalidInput at once; a bad value is
    InvalidInput at the enqueue, which then writes nothing.
    """
    unknown = sorted(set(options) - set(FLOW_OPTIONS))
    if unknown:
        raise InvalidInput(
            f"unknown ATP enqueue option(s) {unknown}; valid: {', '.join(FLOW_OPTIONS)}"
        )
    state = EnqueueOptions({name: value for name, value in options.items() if value is not None})
    token = _FLOW.set(state)
    try:
        yield state
    finally:
        _FLOW.reset(token)


# ATP status code → Django result status (codes from atp.models.Status, kept literal here so
# this module imports before the app registry is ready).
_STATUS = {
    0: TaskResultStatus.READY,  # UNDEFINED
    1: TaskResultStatus.READY,  # ACCEPTED
    2: TaskResultStatus.READY,  # SCHEDULED: claimed, not started
    3: TaskResultStatus.RUNNING,  # RUNNING
    4: TaskResultStatus.RUNNING,  # PAUSED
    5: TaskResultStatus.SUCCESSFUL,  # FINISHED
    6: TaskResultStatus.FAILED,  # FAILED
    7: TaskResultStatus.FAILED,  # REVOKED
    8: TaskResultStatus.RUNNING,  # WAITING: for its subtasks
    9: TaskResultStatus.READY,  # BLOCKED: for the tasks it depends on
}


def type_identifier(module_path: str) -> str:
    """The ATP task type identifier of a task function: its module path, at most 64 chars."""
    limit = validation.IDENTIFIER_MAX_LENGTH
    if len(module_path) <= limit:
        return module_path
    digest = hashlib.sha256(module_path.encode()).hexdigest()[:12]
    return f"{module_path[: limit - len(digest) - 1]}~{digest}"


class ATPBackend(BaseTaskBackend):
    """Django tasks backend that stores tasks in ATP's queue; ``manage.py atpd`` runs them.

    ATP's models are imported inside the methods: backends are built while modules with
    ``@task`` functions are imported, which may be before the app registry is ready.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias, params):
        super().__init__(alias, params)
        # The register_task_type() arguments of the task types this backend creates.
        self.options = dict(params.get("OPTIONS") or {})

    # --- enqueue --------------------------------------------------------------------------

    def enqueue(self, task, args, kwargs):
        """Put a call of ``task`` in ATP's queue and return its (READY) result."""
        from atp import tracker
        from atp.models import TaskInstance

        self.validate_task(task)
        task_input = self._input(task, args, kwargs)
        task_type = self._task_type(task.module_path)
        flow = _FLOW.get()
        options = dict(flow.options) if flow is not None else {}
        unique_key = options.pop("unique_key", None)
        call = (
            task_type,
            None,
            task_input,
            f"Enqueued through Django's tasks framework (backend {self.alias!r}).",
        )
        options.update(priority=task.priority, queue=task.queue_name, run_after=task.run_after)
        if unique_key is None:
            task_id, created = tracker.enqueue_task(*call, **options), True
        else:
            task_id, created = tracker.enqueue_unique(*call, unique_key=unique_key, **options)
        if flow is not None:
            flow.created = created
        result = self.result_for(TaskInstance.objects.select_related("type").get(pk=task_id))
        if created:  # a held unique key enqueued nothing
            task_enqueued.send(type(self), task_result=result)
        return result

    def _input(self, task, args, kwargs) -> dict:
        try:
            call = normalize_json({"args": list(args), "kwargs": dict(kwargs)})
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"arguments of task {task.module_path} are not JSON-serialisable ({exc}); "
                "ATP stores them as JSON: pass dicts, lists, strings, numbers, booleans, None"
            ) from exc
        return {
            "task": task.module_path,
            "backend": self.alias,
            "takes_context": task.takes_context,
            "run_after": task.run_after.isoformat() if task.run_after else None,
            **call,
        }

    def _task_type(self, module_path: str):
        """The ATP task type of a task function, registered on first use."""
        from atp import tracker
        from atp.models import TaskType

        identifier = type_identifier(module_path)
        task_type = TaskType.objects.filter(identifier=identifier).first()
        if task_type is None:
            # register_task_type is an upsert, so two first uses racing still end with one type.
            return tracker.register_task_type(identifier, HANDLER, **self.options)
        if task_type.handler != HANDLER:
            raise InvalidInput(
                f"ATP task type {identifier!r} already exists with handler "
                f"{task_type.handler!r}, so task {module_path} cannot use it; rename the "
                "function or unregister that task type"
            )
        return task_type

    # --- results --------------------------------------------------------------------------

    def get_result(self, result_id):
        """The result of the task whose ATP ``uuid`` is ``result_id``, read from the database."""
        from atp.models import TaskInstance

        try:
            instance = TaskInstance.objects.select_related("type", "response").get(
                uuid=result_id, type__handler=HANDLER
            )
        except (TaskInstance.DoesNotExist, ValidationError, ValueError, TypeError):
            raise TaskResultDoesNotExist(result_id) from None
        if not isinstance(instance.input, dict) or "task" not in instance.input:
            # Enqueued with the handler by hand (tracker.enqueue_task): not a Django task.
            raise TaskResultDoesNotExist(result_id)
        return self.result_for(instance)

    def result_for(self, instance) -> TaskResult:
        """Build the Django ``TaskResult`` of an ATP task (a TaskInstance of this backend)."""
        task_input = instance.input if isinstance(instance.input, dict) else {}
        alias = task_input.get("backend", self.alias)
        history = _history(instance)
        result = TaskResult(
            task=_task_of(instance, task_input, alias),  # type: ignore[arg-type]
            id=str(instance.uuid),
            status=_STATUS[instance.status],
            enqueued_at=instance.enqueued_at,
            started_at=history["started_at"],
            finished_at=instance.finished_at,
            last_attempted_at=history["last_attempted_at"],
            args=task_input.get("args", []),
            kwargs=task_input.get("kwargs", {}),
            backend=alias,
            errors=history["errors"],
            worker_ids=history["worker_ids"],
        )
        if result.status == TaskResultStatus.SUCCESSFUL:
            # TaskResult is frozen; the framework's own backends set it the same way.
            object.__setattr__(result, "_return_value", _return_value(instance))
        return result

    # --- checks ---------------------------------------------------------------------------

    def check(self, **kwargs):
        """System checks: ATP installed, valid queue names, known and valid OPTIONS."""
        found = list(super().check(**kwargs))
        if not apps.is_installed("atp"):
            # Nothing else can be checked: the option checks import ATP's models.
            found.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] uses ATPBackend, but 'atp' is not in INSTALLED_APPS.",
                    hint="Add 'atp' to INSTALLED_APPS and run migrate.",
                    id="atp.E101",
                )
            )
            return found
        for queue in sorted(self.queues, key=repr):
            try:
                validation.identifier(queue, "queue name")
            except InvalidInput as exc:
                found.append(
                    checks.Error(
                        f"TASKS[{self.alias!r}]['QUEUES'] has an invalid ATP queue: {exc}.",
                        hint="Queue names are non-empty strings of at most 64 characters.",
                        id="atp.E102",
                    )
                )
        found += [
            checks.Error(
                f"TASKS[{self.alias!r}]['OPTIONS']: {problem}",
                hint="OPTIONS are the register_task_type() arguments of new task types: "
                f"{', '.join(self._allowed_options())}.",
                id="atp.E103",
            )
            for problem in self._option_problems()
        ]
        return found

    @staticmethod
    def _allowed_options() -> list[str]:
        from atp.tracker import TYPE_OPTIONS

        return [
            *TYPE_ARGUMENTS,
            *(name for name in TYPE_OPTIONS if name not in ("queue", "priority")),
        ]

    def _option_problems(self) -> list[str]:
        from atp.tracker import TYPE_OPTIONS
        from atp.tracker.tasktypes import ARGUMENT_CHECKS

        allowed = self._allowed_options()
        checkers = {**TYPE_OPTIONS, **ARGUMENT_CHECKS}
        problems = []
        for name, value in sorted(self.options.items()):
            if name not in allowed:
                problems.append(f"unknown option {name!r}")
                continue
            try:
                checkers[name](value)
            except InvalidInput as exc:
                problems.append(str(exc))
        return problems


def _task_of(instance, task_input: dict, alias: str) -> Task:
    """The Task an ATP task runs: the imported function with this call's options."""
    path = task_input.get("task") or ""
    target = import_string(path)
    # The module attribute is normally the Task that @task made; a bare function also works.
    func = target.func if isinstance(target, Task) else target
    run_after = task_input.get("run_after")
    return Task(
        func=func,
        priority=instance.priority,
        backend=alias,
        queue_name=instance.queue,
        run_after=datetime.fromisoformat(run_after) if run_after else None,
        takes_context=bool(task_input.get("takes_context")),
    )


def _history(instance) -> dict:
    """Starts, daemons and errors of a task, read from its log (one query)."""
    from atp import events

    records = instance.log.filter(
        event__in=(
            events.TASK_RECEIVED,
            events.TASK_STARTED,
            events.TASK_FAILED,
            events.TASK_REVOKED,
        )
    ).order_by("time", "id")
    worker_ids, errors, starts = [], [], []
    claimed_by = ""
    for record in records:
        fields = record.fields or {}
        if record.event == events.TASK_RECEIVED:
            claimed_by = fields.get("server_id") or ""
        elif record.event == events.TASK_STARTED:
            # A start follows its claim; the claim's event names the daemon that runs it.
            worker_ids.append(claimed_by or instance.server_id)
            starts.append(record.time)
        elif record.event == events.TASK_FAILED:
            errors.append(_failure(record, fields))
        else:
            errors.append(_revocation(record, fields))
    return {
        "worker_ids": worker_ids,
        "errors": errors,
        "started_at": starts[0] if starts else None,
        "last_attempted_at": starts[-1] if starts else None,
    }


def _failure(record, fields) -> TaskError:
    """The TaskError of a ``task-failed`` event: exception class path and traceback."""
    exception = str(fields.get("exception") or "")
    return TaskError(
        exception_class_path=_exception_path(exception),
        traceback=fields.get("traceback") or record.message or exception,
    )


def _revocation(record, fields) -> TaskError:
    """The TaskError of a ``task-revoked`` event."""
    how = "expired" if fields.get("expired") else "revoked"
    if fields.get("terminated"):
        how += f", terminated with signal {fields.get('signum')}"
    text = f"atp.exceptions.TaskRevoked: task {how}"
    return TaskError(
        exception_class_path="atp.exceptions.TaskRevoked",
        traceback=f"{text}: {record.message}" if record.message else text,
    )


def _exception_path(exception: str) -> str:
    """The dotted class path in an event's ``exception`` text (``"pkg.Error: message"``).

    Builtin exceptions may appear bare (``"TimeoutError"``). Text that names no class (a
    handler's ``set_failure("message")``) maps to ``atp.exceptions.TaskFailed``.
    """
    head = exception.split(":", 1)[0].strip()
    parts = head.split(".")
    if head and all(part.isidentifier() for part in parts):
        if len(parts) > 1:
            return head
        builtin = getattr(builtins, head, None)
        if isinstance(builtin, type) and issubclass(builtin, BaseException):
            return f"builtins.{head}"
    return "atp.exceptions.TaskFailed"


def _return_value(instance):
    """A finished task's return value: its JSON result, else its JSON response, else None."""
    from atp.models import Response

    if instance.result is not None:
        return instance.result
    try:
        response = instance.response
    except Response.DoesNotExist:
        return None
    if response.mime_type != RESULT_MIME_TYPE:
        return None
    return json.loads(bytes(response.data))
