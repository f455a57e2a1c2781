"""ORM calls from async handlers: where ``TaskStatus``'s ``a``-methods run their queries.

Django refuses ORM calls from a thread that runs an event loop, so an async handler's
database work runs in a thread. Which one is set per handler run by whoever runs it
(``atp.daemon.asyncrun``): a small pool of database threads with a connection each, so the
handlers of one event loop share a few connections; or none, and the call goes back to the
thread waiting for the handler through ``sync_to_async(thread_sensitive=True)`` (in-process
runs by ``atp.testing``, whose caller's transaction must be seen).
"""

import asyncio
import contextvars

from django.db import close_old_connections

#: The executor of database calls of the handler running in this context (None: the caller).
db_executor: contextvars.ContextVar = contextvars.ContextVar("atp_db_executor", default=None)


async def db_call(function, *args, **kwargs):
    """Run the sync (ORM) ``function`` where this handler's database calls run; await it."""
    from asgiref.sync import sync_to_async

    executor = db_executor.get()
    if executor is None:
        # The caller's own thread and connection: left as they are (no clean-up), as the
        # caller's transaction may be open on it.
        return await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)

    def call():
        close_old_connections()  # one that broke while idle is replaced, as pool threads do
        return function(*args, **kwargs)

    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(executor, context.run, call)
