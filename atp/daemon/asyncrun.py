"""Running ``async def`` handlers: one event loop per thread, soft limits, database calls.

A coroutine handler runs on an event loop of the thread that runs it: a process child's
main thread, a thread of the thread pool, or the asyncio pool's one loop thread
(``atp.daemon.asyncio_pool``). The loop of a process child or pool thread is made once and
kept for every async handler that thread runs ("one loop per child").

**Database calls.** Django refuses ORM calls from a thread that runs an event loop
(``SynchronousOnlyOperation``), so ``TaskStatus``'s ``a``-methods (``await
status.aset_progress(…)``, ``aheartbeat``, ``ais_aborted``…) run the ORM call on a small
thread pool through ``run_in_executor``, each thread with its own connection: one thread
per loop of a process child or pool thread, ``ATP['ASYNC_DB_THREADS']`` for the asyncio
pool's loop. A hundred handlers on the asyncio pool thus share a few connections instead of
holding one each (PostgreSQL allows 100 by default); a call waits for a free thread while
the other handlers keep running. A handler's own async ORM calls (``await
Model.objects.aget(…)``) go through Django's ``sync_to_async``: one more thread and
connection per process.

**Soft time limits.** In a thread (thread pool, asyncio pool) the loop cancels the handler
at ``soft_time_limit``; in a process child the daemon's SIGUSR1 does it (signals reach only
the main thread). Either way the handler gets ``CancelledError`` at the ``await`` it waits
on (it may clean up in ``except``/``finally``) and the attempt ends with
``SoftTimeLimitExceeded``, as a sync handler's would.
"""

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

from atp import asyncdb
from atp.conf import settings
from atp.exceptions import SoftTimeLimitExceeded

_local = threading.local()


def db_executor(threads: int | None = None) -> ThreadPoolExecutor:
    """A thread pool for the ORM calls of async handlers (see the module doc)."""
    size = threads or max(1, settings.ASYNC_DB_THREADS)
    return ThreadPoolExecutor(max_workers=size, thread_name_prefix="atp-async-db")


def run(make_coroutine, soft_time_limit=None):
    """Run ``make_coroutine()`` to its end on this thread's event loop; return its value.

    The loop (and its one database thread) is made on the thread's first async handler and
    reused for the next ones. Inside ``calling_thread_db()`` the coroutine runs through
    ``async_to_sync`` instead, its ORM calls on this thread.
    """
    if getattr(_local, "inline", False):
        from asgiref.sync import async_to_sync

        return async_to_sync(supervise)(make_coroutine, None)
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
        _local.executor = db_executor(threads=1)
    in_thread = threading.current_thread() is not threading.main_thread()
    runner = loop.create_task(
        supervise(make_coroutine, _local.executor, soft_time_limit if in_thread else None)
    )
    try:
        return loop.run_until_complete(runner)
    except SoftTimeLimitExceeded:
        # SIGUSR1 from the daemon raised it in this (main) thread. If it struck the
        # loop's own code rather than the handler's, the handler still waits: cancel it,
        # let it clean up, and report the limit.
        if not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                loop.run_until_complete(runner)  # its own error is moot: the limit is reported
        raise


@contextlib.contextmanager
def calling_thread_db():
    """Within it, async handlers run via ``async_to_sync`` with their ORM calls on this thread.

    For ``atp.testing``: a test's transaction lives on the test's thread, and a handler run
    in-process must see it (and write inside it).
    """
    previous = getattr(_local, "inline", False)
    _local.inline = True
    try:
        yield
    finally:
        _local.inline = previous


async def supervise(make_coroutine, executor, soft_time_limit=None):
    """Await the handler with its database executor set, cancelling it at the soft limit."""
    asyncdb.db_executor.set(executor)
    handler = asyncio.ensure_future(make_coroutine())
    timer = None
    hit = []
    if soft_time_limit:

        def expire():
            hit.append(True)
            handler.cancel()

        timer = asyncio.get_running_loop().call_later(soft_time_limit, expire)
    try:
        return await handler
    except asyncio.CancelledError:
        if hit and not _cancelling_us():
            raise SoftTimeLimitExceeded("the task ran past its soft time limit") from None
        handler.cancel()
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _cancelling_us() -> bool:
    """Whether the supervising task itself was cancelled (a kill), not only its handler."""
    current = asyncio.current_task()
    return bool(current is not None and current.cancelling())
