"""Decorated tasks the tests enqueue and daemons run (found by ``atp.discovery.autodiscover``)."""

import asyncio
import os
import time

from atp import task


@task
def add(a, b=0):
    """Return ``a + b``."""
    return a + b


@task(name="taskapp.resize", max_retries=0, timeout=600)
def resize(path: str, width: int = 640) -> dict:
    """Pretend to resize an image; return what it would have made."""
    return {"path": path, "width": width}


@task(takes_status=True)
def report(task_status, steps: int) -> int:
    """Report progress ``steps`` times; return the task id it ran as (from its TaskStatus)."""
    for done in range(1, steps + 1):
        task_status.set_progress(done, steps, f"step {done}")
    return task_status.task_id


@task
def unjsonable():
    """Return a value JSON cannot hold."""
    return {1, 2}


@task
def fail(message: str):
    """Raise ValueError(message)."""
    raise ValueError(message)


@task
def fan_out(count: int) -> int:
    """Enqueue ``count`` ``add`` tasks; return how many."""
    for n in range(count):
        add.enqueue(n, b=1)
    return count


@task
async def async_add(a: int, b: int = 0, delay: float = 0.01) -> int:
    """Wait ``delay`` seconds without blocking the loop, then return ``a + b``."""
    await asyncio.sleep(delay)
    return a + b


@task(takes_status=True)
async def async_progress(task_status, steps: int) -> dict:
    """Heartbeat and report progress through the async TaskStatus methods; return the pid."""
    for done in range(1, steps + 1):
        await task_status.aheartbeat()
        await task_status.aset_progress(done, steps, f"step {done}")
    return {"pid": os.getpid(), "steps": steps}


@task(takes_status=True)
async def async_sleep(task_status, seconds: float, marker: str = "") -> str:
    """Sleep; if cancelled (soft limit, terminate), write ``marker`` and re-raise."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if marker:
            with open(marker, "w") as out:
                out.write("cancelled")
        raise
    return "slept"


@task(takes_status=True)
async def async_until_aborted(task_status, limit: float = 60) -> str:
    """Poll ``ais_aborted`` until the task is aborted; return 'stopped'."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await task_status.ais_aborted():
            return "stopped"
        await asyncio.sleep(0.05)
    return "never aborted"


@task
async def async_fail(message: str):
    """Raise ValueError(message) from a coroutine."""
    await asyncio.sleep(0)
    raise ValueError(message)


@task
def sync_sleep(seconds: float) -> float:
    """Block for ``seconds`` (a sync handler, refused by the asyncio pool)."""
    time.sleep(seconds)
    return seconds
