"""``@task``: declare a task where its function is defined, enqueue it like a call.

```python
from atp import task


@task(timeout=600, max_retries=2)
def resize(path: str, width: int = 640) -> dict:
    ...
    return {"path": path, "width": width}


handle = resize.enqueue("photo.jpg", width=320)  # an ATP task, PENDING
handle.wait(timeout=30)  # {"path": "photo.jpg", "width": 320}
resize.using(priority=5, countdown=10).enqueue("b.jpg")  # enqueue options for one call
```

The decorated object is a ``Task``: calling it runs the function here and now, ``enqueue``
puts a call in ATP's queue. Its task type (identifier ``module.function`` unless ``name``
is given, handler the Task's own dotted path) is created or updated from the decorator's
options by ``atp.discovery`` when a daemon starts and at the first enqueue; the stored
input is ``{"args": [...], "kwargs": {...}}``, which events, Flower and ``as_dict`` show as
Celery's ``args``/``kwargs``. The function's JSON return value becomes the task's
``result``. ``Task`` is generic over the function's parameters and return value, so a type
checker rejects ``resize.enqueue("a.jpg", width="x")``.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

from atp.calls import call_input, is_call_input, split_input  # noqa: F401 - re-exported
from atp.exceptions import (
    InvalidInput,
    ReturnValueNotJSON,
    TaskFailed,
    TaskRevoked,
    UnknownTaskType,
)

if TYPE_CHECKING:
    from atp.taskstatus import TaskStatus

P = ParamSpec("P")
R = TypeVar("R")

#: ``enqueue_task`` options ``Task.using`` accepts (``identifier`` and ``message`` besides).
CALL_OPTIONS = ("priority", "queue", "run_after", "eta", "countdown", "expires", "parent")
#: Polling of ``TaskHandle.wait``: first delay, growth factor and cap, in seconds.
POLL_FIRST, POLL_FACTOR, POLL_MAX = 0.02, 1.5, 0.5


class Task(Generic[P, R]):
    """A function declared as an ATP task (see the module doc); made by ``@task``."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        takes_status: bool = False,
        type_options: dict | None = None,
        call_options: dict | None = None,
    ):
        if not callable(func):
            raise InvalidInput(f"@task decorates functions, not {func!r}")
        self.func = func
        self.module = func.__module__
        self.qualname = func.__qualname__
        if "<locals>" in self.qualname or "." in self.qualname:
            raise InvalidInput(
                f"@task on {self.module}.{self.qualname}: a task must be a module-level "
                "function, so a daemon can import it by its dotted path"
            )
        self.name = name or f"{self.module}.{self.qualname}"
        self.takes_status = bool(takes_status)
        self.type_options = dict(type_options or {})
        self.call_options = dict(call_options or {})
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature = inspect.signature(func)
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__wrapped__ = func

    @property
    def handler(self) -> str:
        """The dotted path the task type stores: where a daemon imports this Task from."""
        return f"{self.module}.{self.qualname}"

    def __repr__(self):
        return f"<atp task {self.name!r} ({self.handler})>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as a plain call (nothing is enqueued)."""
        return self.func(*args, **kwargs)

    # --- enqueueing ---------------------------------------------------------------------

    def using(
        self,
        *,
        priority: int | None = None,
        queue: str | None = None,
        run_after=None,
        eta=None,
        countdown: float | None = None,
        expires=None,
        parent: int | None = None,
        identifier: str | None = None,
        message: str | None = None,
        **options: Any,
    ) -> Task[P, R]:
        """This task with enqueue options for the calls made through it (not the type's).

        ``priority``, ``queue``, ``run_after``/``eta`` (datetime) or ``countdown``
        (seconds), ``expires`` (datetime or seconds), ``parent`` (task id), ``identifier``
        (unique per type; a UUID by default), the log ``message``, and any other
        ``enqueue_task`` option: ``unique_key``/``unique_for`` (while a task holds the key,
        ``enqueue`` returns that task's handle and creates nothing), ``concurrency_key``,
        ``depends_on`` (ids or handles), ``on_dependency_failure``, ``workflow``… Unknown
        options raise InvalidInput now.
        """
        from atp.tracker import ENQUEUE_OPTIONS

        unknown = set(options) - set(ENQUEUE_OPTIONS)
        if unknown:
            raise InvalidInput(
                f"unknown enqueue option(s) {sorted(unknown)} for task {self.name!r}; valid: "
                f"{sorted({*ENQUEUE_OPTIONS, 'identifier', 'message'})}"
            )
        if isinstance(options.get("depends_on"), list | tuple):
            options["depends_on"] = [
                getattr(item, "id", item) for item in options["depends_on"]
            ]  # handles or ids
        given = {
            "priority": priority,
            "queue": queue,
            "run_after": run_after,
            "eta": eta,
            "countdown": countdown,
            "expires": expires,
            "parent": parent,
            "identifier": identifier,
            "message": message,
            **options,
        }
        merged = {**self.call_options, **{k: v for k, v in given.items() if v is not None}}
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.call_options = merged
        return copy

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Put a call of this task in ATP's queue; return its handle at once.

        The arguments must bind to the function's signature and be JSON (InvalidInput
        otherwise, and nothing is enqueued). Inside ``transaction.atomic()`` the task
        exists only if the transaction commits. Raises QueueFull at the queue limit.
        """
        from atp import discovery, tracker

        task_input = self.bind(args, kwargs)
        options = dict(self.call_options)
        identifier = options.pop("identifier", None)
        message = options.pop("message", None) or f"Enqueued by {self.handler}.enqueue()."
        discovery.ensure_registered(self)
        try:
            task_id = tracker.enqueue_task(self.name, identifier, task_input, message, **options)
        except UnknownTaskType:
            # The type was deleted (or its creation rolled back) since this process made it.
            discovery.ensure_registered(self, again=True)
            task_id = tracker.enqueue_task(self.name, identifier, task_input, message, **options)
        return TaskHandle(task_id)

    def bind(self, args, kwargs) -> dict:
        """The stored input of a call; InvalidInput if it does not fit the signature or JSON."""
        bound_args = (None, *args) if self.takes_status else tuple(args)
        try:
            self.signature.bind(*bound_args, **kwargs)
        except TypeError as exc:
            raise InvalidInput(
                f"arguments of task {self.name!r} do not fit {self.func.__name__}"
                f"{self._shown_signature()}: {exc}"
            ) from exc
        task_input = call_input(args, kwargs)
        try:
            text = json.dumps(task_input, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"arguments of task {self.name!r} are not JSON-serialisable ({exc}); ATP "
                "stores them as JSON: pass dicts, lists, strings, numbers, booleans, None"
            ) from exc
        return json.loads(text)  # tuples become lists now, not differently in the daemon

    def _shown_signature(self) -> str:
        if not self.takes_status:
            return str(self.signature)
        rest = list(self.signature.parameters.values())[1:]
        return str(self.signature.replace(parameters=rest))

    # --- running (called by the runner with the attempt's TaskStatus and input) ----------

    def run(self, task_status: TaskStatus, task_input) -> Any:
        """Call the function with a task's stored arguments (the runner's entry point).

        Returns its value, or for an ``async def`` function the coroutine to await. Used
        by ``atp.daemon.runner``; call the Task itself to run the function directly.
        """
        args, kwargs = split_input(task_input)
        if self.takes_status:
            args = [task_status, *args]
        value = self.func(*args, **kwargs)
        if self.is_async:
            return self._checked_async(value)
        return json_result(value, self.name)

    async def _checked_async(self, coroutine):
        return json_result(await coroutine, self.name)


def json_result(value, name: str):
    """``value`` if JSON can hold it, else ReturnValueNotJSON naming the task."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ReturnValueNotJSON(
            f"the return value of task {name!r} is not JSON-serialisable ({exc}); ATP stores "
            "it as JSON: return dicts, lists, strings, numbers, booleans or None"
        ) from exc
    return value


@dataclass(frozen=True)
class TaskHandle(Generic[R]):
    """An enqueued task, read fresh from the database at each access (like Celery's AsyncResult)."""

    id: int

    @property
    def uuid(self) -> str:
        """The task's uuid (Celery's task id)."""
        return str(self._row("uuid"))

    @property
    def status(self) -> str:
        """Celery's state name: PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, REVOKED, …"""
        from atp.query.states import state_name

        return state_name(self._row("status"))

    @property
    def ready(self) -> bool:
        """Whether the task has ended (SUCCESS, FAILURE or REVOKED)."""
        from atp.models import TERMINAL

        return self._row("status") in TERMINAL

    @property
    def result(self) -> R | None:
        """The function's return value once the task FINISHED, else None."""
        from atp.models import Status

        status, result = self._row("status", "result")
        return result if status == Status.FINISHED else None

    def wait(self, timeout: float | None = None) -> R:
        """Wait until the task ends and return its result.

        Raises TimeoutError after ``timeout`` seconds (None: wait for ever), TaskFailed
        (with the exception text) if it failed, TaskRevoked if it was revoked.
        """
        from atp.models import TERMINAL, Status

        deadline = None if timeout is None else time.monotonic() + timeout
        delay = POLL_FIRST
        while True:
            status, result = self._row("status", "result")
            if status in TERMINAL:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"task {self.id} has not ended after {timeout:g} s")
            time.sleep(delay if remaining is None else min(delay, remaining))
            delay = min(delay * POLL_FACTOR, POLL_MAX)
        if status == Status.FINISHED:
            return result
        if status == Status.REVOKED:
            raise TaskRevoked(f"task {self.id} was revoked")
        raise TaskFailed(f"task {self.id} failed: {self._failure()}")

    def _failure(self) -> str:
        from atp import control

        outcome = control.get_result(self.id)
        return outcome.exception or "no exception recorded"

    def _row(self, *fields):
        from atp.exceptions import TaskNotFound
        from atp.models import TaskInstance

        row = TaskInstance.objects.filter(pk=self.id).values_list(*fields).first()
        if row is None:
            raise TaskNotFound(f"no task with id {self.id!r}")
        return row if len(fields) > 1 else row[0]


# --- the decorator, typed per form -----------------------------------------------------------


class AsyncTask(Task[P, R]):
    """A ``Task`` of an ``async def`` function: calling it directly gives the coroutine."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:  # type: ignore[override]
        """Call the function here: the coroutine to await (nothing is enqueued)."""
        return self.func(*args, **kwargs)


class _Decorator(Protocol):
    """What ``@task(...)`` returns, for type checkers."""

    @overload
    def __call__(self, func: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...


class _StatusDecorator(Protocol):
    """What ``@task(takes_status=True, ...)`` returns: the TaskStatus argument is not P's."""

    @overload
    def __call__(
        self, func: Callable[Concatenate[TaskStatus, P], Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...
    @overload
    def __call__(self, func: Callable[Concatenate[TaskStatus, P], R], /) -> Task[P, R]: ...


@overload
def task(func: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...
@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *, name: str | None = ..., takes_status: Literal[False] = ..., **type_options: Any
) -> _Decorator: ...
@overload
def task(
    *, name: str | None = ..., takes_status: Literal[True], **type_options: Any
) -> _StatusDecorator: ...


def task(func=None, /, *, name=None, takes_status=False, **type_options):
    """Declare a function as an ATP task: ``@task`` or ``@task(name=None, **type_options)``.

    ``name`` is the task type's identifier (default ``module.function``); ``takes_status``
    passes the attempt's ``TaskStatus`` as the first argument; ``type_options`` are
    ``register_task_type``'s (``timeout``, ``maxrestart``, ``max_retries``, ``queue``,
    ``rate_limit``, ``soft_time_limit``, …), checked now. Returns a ``Task`` (an
    ``AsyncTask`` for an ``async def`` function).
    """
    from atp import discovery

    def decorate(function):
        kind = AsyncTask if inspect.iscoroutinefunction(function) else Task
        made = kind(function, name=name, takes_status=takes_status, type_options=type_options)
        discovery.check_type_options(made)
        discovery.register(made)
        return made

    if func is not None:
        return decorate(func)
    return decorate
