"""Running a started attempt's handler and reporting how it ended (an ``Outcome``).

``execute`` runs where the handler runs (a pool child, a thread, or in-process) and only
reports; ``atp.daemon.outcomes`` writes the outcome through the tracker. Keeping them apart
lets the daemon record outcomes of children that died, and retry a record while the
database is away.
"""

import asyncio
import inspect
import time
import traceback as traceback_module
from dataclasses import dataclass

from django.utils.module_loading import import_string

from atp import tracker
from atp.daemon import asyncrun
from atp.daemon.db import CONNECTION_ERRORS
from atp.decorators import Task
from atp.exceptions import Retry, StaleAttempt, SyncHandlerRefused
from atp.taskstatus import TaskStatus
from atp.text import storable
from atp.tracker.results import json_text


@dataclass(frozen=True)
class Outcome:
    """How one attempt's handler ended; plain values only, so it crosses process pipes."""

    task_id: int
    attempt: int
    succeeded: bool
    result: str = ""  # repr of the return value
    result_json: str | None = None  # the return value as JSON text, when it is JSON
    message: str = ""
    exception: str = ""  # "module.Class: message"
    traceback: str = ""
    runtime: float = 0.0
    lost: bool = False  # the handler learnt (StaleAttempt) that its task was taken away
    handled: bool = False  # the handler already re-enqueued (retry) or failed its task
    transient: bool = False  # it failed because the database went away: worth a restart


def execute(attempt: tracker.Attempt, errors: list | None = None) -> Outcome:
    """Call the attempt's handler ``handler(task_status, input)`` and report how it ended.

    A handler that returns a coroutine (an ``async def`` handler or task) is run to its end
    on this thread's event loop (``atp.daemon.asyncrun``). ``errors``, when given, receives
    the exception a failing handler raised (eager mode re-raises it).
    """
    status = TaskStatus(attempt.task_id, attempt.number, soft_time_limit=attempt.soft_time_limit)
    begin = time.monotonic()
    try:
        handler = import_string(attempt.handler)
        result = _call(handler, status, attempt.input)
        if inspect.isawaitable(result):
            result = asyncrun.run(lambda: result, attempt.soft_time_limit)
    except BaseException as exc:
        return _failed(attempt, exc, begin, errors)
    return _succeeded(attempt, result, begin)


async def execute_async(attempt: tracker.Attempt, executor=None) -> Outcome:
    """``execute`` for the asyncio pool: await an async handler on the running loop.

    A sync handler is refused (``SyncHandlerRefused``): it would block every handler on
    the loop. ``executor`` runs the handler's ORM calls (``asyncrun.db_call``).
    """
    status = TaskStatus(attempt.task_id, attempt.number, soft_time_limit=attempt.soft_time_limit)
    begin = time.monotonic()
    try:
        handler = import_string(attempt.handler)
        if not is_async_handler(handler):
            raise SyncHandlerRefused(
                f"handler {attempt.handler} of task type {attempt.type} is not async; the "
                "asyncio pool runs only async def handlers: serve this type with "
                "--pool processes or --pool threads (atpd --queues keeps them apart)"
            )
        result = await asyncrun.supervise(
            lambda: _call(handler, status, attempt.input), executor, attempt.soft_time_limit
        )
    except asyncio.CancelledError:
        raise  # killed (time limit, revoke with terminate): the pool reports it
    except BaseException as exc:
        return _failed(attempt, exc, begin, None)
    return _succeeded(attempt, result, begin)


def is_async_handler(handler) -> bool:
    """Whether calling ``handler`` gives a coroutine: an ``async def`` handler or task."""
    if isinstance(handler, Task):
        return handler.is_async
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an async __call__ of an object
    )


def _call(handler, status, task_input):
    """Call a handler: a @task with its stored arguments, else ``handler(status, input)``."""
    if isinstance(handler, Task):
        return handler.run(status, task_input)
    return handler(status, task_input)


def _succeeded(attempt, result, begin) -> Outcome:
    return Outcome(
        attempt.task_id,
        attempt.number,
        True,
        result=_safe_repr(result),
        runtime=time.monotonic() - begin,
        result_json=json_text(result),
    )


def _failed(attempt, exc: BaseException, begin: float, errors) -> Outcome:
    """The outcome of a handler that raised ``exc`` (re-raised if it is not the handler's)."""
    if isinstance(exc, StaleAttempt):
        return Outcome(attempt.task_id, attempt.number, False, message=str(exc), lost=True)
    if isinstance(exc, Retry):  # task_status.retry() already wrote the task's new status
        return Outcome(
            attempt.task_id,
            attempt.number,
            False,
            message=str(exc),
            handled=True,
            runtime=time.monotonic() - begin,
        )
    if isinstance(exc, CONNECTION_ERRORS):
        return Outcome(
            attempt.task_id,
            attempt.number,
            False,
            message=f"the database went away while the handler ran: {exc}",
            exception=f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}",
            transient=True,
        )
    if not isinstance(exc, (Exception, SystemExit)):  # a handler's sys.exit() fails its task only
        raise exc  # the pools' last net (thread_pool, child) still fails only this task
    if errors is not None:
        errors.append(exc)
    return failure(attempt, exc, time.monotonic() - begin)


def failure(attempt: tracker.Attempt, exc: BaseException, runtime: float = 0.0) -> Outcome:
    """The outcome of a handler that raised ``exc``, described without trusting ``exc``.

    An exception whose ``__str__`` raises still gets its class and traceback recorded.
    """
    text = _safe_str(exc)
    try:
        trace = "".join(traceback_module.format_exception(exc))
    except Exception:  # noqa: BLE001 - a broken exception must not break its own report
        trace = "".join(traceback_module.format_tb(exc.__traceback__))
    # Storable (atp.text) already here: the daemon logs these texts too.
    return Outcome(
        attempt.task_id,
        attempt.number,
        False,
        message=storable(text or type(exc).__name__),
        exception=storable(f"{type(exc).__module__}.{type(exc).__qualname__}: {text}"),
        traceback=storable(trace),
        runtime=runtime,
    )


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as error:  # noqa: BLE001 - its __str__ raised
        return f"<str() of the exception raised {type(error).__name__}>"


def _safe_repr(value) -> str:
    try:
        return storable(repr(value))
    except Exception as exc:  # a broken __repr__ must not turn a success into a crash
        return f"<unrepresentable {type(value).__name__}: {exc}>"
