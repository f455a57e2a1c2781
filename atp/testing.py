"""Running tasks in the calling process: ``drain()`` for tests, and eager mode.

``drain()`` claims and runs every due task here, one at a time, through the same tracker
calls and runner a daemon uses (statuses, events, retries, subtasks, results), including
the tasks those tasks enqueue, until none is due; it returns the ids it ran. Tests that
enqueue call it instead of starting ``atpd``.

**Eager mode** (``ATP["EAGER"] = True``): every enqueue drains the queue when its
transaction commits (at once outside a transaction). A handler's error is stored on its
task, as a daemon stores it, and not raised, unless ``ATP["EAGER_PROPAGATE"]`` is true:
then the task is recorded FAILED first and the enqueue (or the commit) raises
``EagerTaskFailed``, chained to the handler's exception.

Inside a test wrapped in a transaction (pytest-django's ``db``, Django's ``TestCase``),
enqueues made outside your own ``transaction.atomic()`` run at once, as they would commit
in production; those made inside one run when ``drain()`` is called (the test's own
transaction never commits, so on-commit callbacks would never fire).

Not as in a daemon: tasks run one after another in this thread; a retry or a task with a
later ``run_after`` waits until it is due (call ``drain()`` again then); time limits are
not enforced (nothing can kill the caller); the claiming daemon is ``SERVER_ID``.
"""

import logging
import threading

from django.db import transaction

from atp import tracker
from atp.conf import settings
from atp.exceptions import ATPError

logger = logging.getLogger("atp.testing")

#: The server id of the tasks that ``drain()`` and eager mode run.
SERVER_ID = "in-process"
#: Most tasks one ``drain()`` runs by default: a task that re-enqueues itself for ever stops.
MAX_TASKS = 10_000

_local = threading.local()


class EagerTaskFailed(ATPError):
    """A task run in eager mode with ``EAGER_PROPAGATE`` failed (its handler's error chained)."""


class DrainLimitReached(ATPError):
    """``drain()`` ran its ``max_tasks`` and tasks were still due."""


def drain(*, queues=None, max_tasks: int = MAX_TASKS, propagate: bool | None = None) -> list[int]:
    """Run every due task in this process until none is left; return their ids in run order.

    ``queues`` limits it to those queues. ``propagate`` (default ``ATP["EAGER_PROPAGATE"]``)
    raises ``EagerTaskFailed`` after recording a handler's failure. Raises
    ``DrainLimitReached`` when ``max_tasks`` ran and more were due. Reentrant: a drain
    started by a task's enqueue while one runs leaves the work to the running one.
    """
    from atp.daemon import asyncrun
    from atp.daemon.outcomes import record
    from atp.daemon.runner import execute

    if propagate is None:
        propagate = settings.EAGER_PROPAGATE
    if getattr(_local, "draining", False):
        return []
    ran: list[int] = []
    _local.draining = True
    try:
        while True:
            attempts = tracker.claim_tasks(SERVER_ID, "Claimed in-process.", limit=1, queues=queues)
            if not attempts:
                return ran
            if len(ran) >= max_tasks:
                # Give the claimed task back untouched (not a restart) and stop.
                tracker.reenqueue_task(attempts[0].task_id, "drain(): max_tasks reached.")
                raise DrainLimitReached(f"drain() ran {max_tasks} tasks and more are due")
            attempt = attempts[0]
            errors: list[BaseException] = []
            with asyncrun.calling_thread_db():  # async handlers see this thread's transaction
                outcome = execute(attempt, errors=errors)
            with transaction.atomic():
                what = record(outcome)
            ran.append(attempt.task_id)
            logger.info(
                "Ran %s::%s (id %d) in-process: %s",
                attempt.type,
                attempt.identifier,
                attempt.task_id,
                what,
            )
            if propagate and not outcome.succeeded and not outcome.handled:
                raise EagerTaskFailed(
                    f"task {attempt.type}::{attempt.identifier} (id {attempt.task_id}) "
                    f"failed: {outcome.exception or outcome.message}"
                ) from (errors[0] if errors else None)
    finally:
        _local.draining = False


def after_enqueue(using=None) -> None:
    """Eager mode's hook, called by the tracker after every enqueue (see the module doc)."""
    if not settings.EAGER or getattr(_local, "draining", False):
        return
    connection = transaction.get_connection(using)
    own_blocks = [
        block
        for block in getattr(connection, "atomic_blocks", [])
        if not getattr(block, "_from_testcase", False)
    ]
    if own_blocks:
        transaction.on_commit(drain, using=using)
    else:
        drain()
