"""Rate limits per task type (``"10/m"``), enforced at claim time across all daemons.

Celery enforces a rate limit inside each worker, so N workers run N times the rate. ATP
counts claims in the database: a type limited to ``n/period`` has at most ``n`` tasks
claimed (``received_at``) in any sliding window of that period, however many daemons run.
"""

import logging
from datetime import timedelta

from atp import sql, validation
from atp.exceptions import InvalidInput
from atp.models import TaskInstance

logger = logging.getLogger("atp.ratelimit")

#: Seconds per rate unit.
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str) -> tuple[int, float] | None:
    """``"10/m"`` → ``(10, 60.0)``; an empty rate (no limit) → None.

    A malformed rate (written past the validation, say in the admin) is logged and ignored
    rather than allowed to stop every claim.
    """
    try:
        rate = validation.rate(rate)
    except InvalidInput as exc:
        logger.error("Ignoring the rate limit %r: %s", rate, exc)
        return None
    count, _, unit = rate.partition("/")
    if not rate or int(count) == 0:
        return None  # no limit; 0 means none, as in Celery
    return int(count), PERIODS[unit]


def admit(tasks, now) -> tuple[list, set[int], set[int]]:
    """Split claim candidates by their types' rate limits.

    ``tasks`` are locked, due TaskInstances (type loaded), in claim order. Returns the ones
    that may be claimed now, in the same order, the ids of the types that have no room
    left (the caller looks past those), and among them the ids of the types that were not
    counted because another daemon held the lock (their window may have room: nothing to
    report). Call inside the claim transaction: the lock it takes (when a task has a rate
    limit) lasts until the claims are committed.
    """
    admitted, full, busy = [], set(), set()
    room: dict[int, int] = {}
    for task in tasks:
        limit = parse_rate(task.type.rate_limit)
        if limit is None:
            admitted.append(task)
            continue
        if task.type_id not in room:
            counted = _room(task.type_id, limit, now)
            if counted is None:
                busy.add(task.type_id)
            room[task.type_id] = counted or 0
        if room[task.type_id] > 0:
            room[task.type_id] -= 1
            admitted.append(task)
        if room[task.type_id] <= 0:
            full.add(task.type_id)
    return admitted, full, busy


def _room(type_id: int, limit: tuple[int, float], now) -> int | None:
    """How many more tasks of the type may be claimed now; None if the lock was busy."""
    count, period = limit
    if not sql.lock_rate_limits():
        return None  # another daemon is claiming rate-limited tasks: look again next time
    window = TaskInstance.objects.filter(
        type_id=type_id, received_at__gt=now - timedelta(seconds=period)
    )
    # Counting at most ``count`` rows keeps this cheap whatever the history holds.
    return count - window.order_by().values("pk")[:count].count()
