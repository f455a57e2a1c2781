"""Concurrency limits per key, enforced at claim time across all daemons.

A type with ``concurrency_limit = N`` has at most N tasks of one ``concurrency_key``
SCHEDULED, RUNNING or PAUSED at once, however many daemons claim. Tasks without a key share
one key (None), so a limit without keys caps the whole type. The claim counts a key's
active tasks and claims under one transaction-scoped lock (``sql.lock_rate_limits``, the
rate limits' lock: one lock for every counted claim rule cannot deadlock), so two daemons
never both see room for the same last place. A daemon that dies frees its places when its
tasks are recovered (re-enqueued: ACCEPTED no longer counts).
"""

from functools import reduce
from operator import or_

from django.db.models import Q

from atp import sql
from atp.models import ACTIVE, TaskInstance


def admit(
    tasks, budget: int | None
) -> tuple[list, set[tuple[int, str | None]], bool, set[tuple[int, str | None]]]:
    """Split claim candidates by their types' concurrency limits.

    ``tasks`` are locked, due TaskInstances (type loaded), in claim order; ``budget`` is how
    many tasks of limited types this claim may take at most (None: no cap; the daemon
    passes its idle slots, so a limited task never waits in a slot's queue behind other
    work while it holds a place of its key). Returns the tasks that may be claimed now (in
    order), the ``(type id, key)`` pairs that are full, and whether the budget ran out;
    the caller looks past both. The last element holds the full pairs that were not
    counted because another daemon held the claim-rules lock (nothing to report: they may
    have room). Call inside the claim transaction.
    """
    admitted, full, busy = [], set(), set()
    room: dict[tuple[int, str | None], int] = {}
    exhausted = False
    for task in tasks:
        limit = task.type.concurrency_limit
        if limit is None:
            admitted.append(task)
            continue
        if budget is not None and budget <= 0:
            exhausted = True
            continue
        key = (task.type_id, task.concurrency_key)
        if key not in room:
            counted = _room(key, limit)
            if counted is None:
                busy.add(key)
            room[key] = counted or 0
        if room[key] > 0:
            room[key] -= 1
            admitted.append(task)
            if budget is not None:
                budget -= 1
        if room[key] <= 0:
            full.add(key)
    return admitted, full, exhausted, busy


def of_keys(full) -> Q:
    """The condition matching the tasks of the full ``(type id, key)`` pairs."""
    return reduce(or_, (_of_key(type_id, key) for type_id, key in full), Q(pk__in=[]))


def active_of_key(type_id: int, key: str | None):
    """Tasks of a type and concurrency key that hold one of its places now."""
    return TaskInstance.objects.filter(_of_key(type_id, key), status__in=sorted(ACTIVE))


def _of_key(type_id: int, key: str | None) -> Q:
    if key is None:
        return Q(type_id=type_id, concurrency_key__isnull=True)
    return Q(type_id=type_id, concurrency_key=key)


def _room(key: tuple[int, str | None], limit: int) -> int | None:
    """How many more tasks of the key may be claimed now; None if the lock was busy.

    Counted only under the claim-rules lock: a count without it could see room for a place
    another daemon is taking at the same moment.
    """
    if not sql.lock_rate_limits():
        return None  # a daemon frozen in its claim holds the lock: look again next time
    # Counting at most ``limit`` rows keeps this cheap however many tasks run.
    return limit - active_of_key(*key).order_by().values("pk")[:limit].count()
