"""Django task functions (``@task``) the backend tests enqueue; atpd imports them by path."""

import asyncio
import time

from atp.tasks_compat import task


@task
def add(a, b):
    """Return ``a + b``."""
    return a + b


@task
def fail(message):
    """Raise ValueError(message)."""
    raise ValueError(message)


@task
def not_json():
    """Return a value JSON cannot hold."""
    return {"when": object()}


@task
async def async_double(n):
    """A coroutine function: yield to the event loop, then return ``2 * n``."""
    await asyncio.sleep(0)
    return 2 * n


@task(takes_context=True)
def whoami(context):
    """Return what the context says about this run."""
    return {"attempt": context.attempt, "id": context.task_result.id}


@task(takes_context=True)
def slow_first_attempt(context, seconds):
    """Sleep ``seconds`` on the first attempt (so it can be killed); later, return at once."""
    if context.attempt == 1:
        time.sleep(seconds)
    return context.attempt


@task(queue_name="other")
def on_other_queue():
    """A task on the ``other`` queue."""
    return "other"
