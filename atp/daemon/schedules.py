"""When a daemon ticks the schedules (``atp.schedules.ticking`` does the ticking).

At most every ``HORIZON`` seconds, and exactly at the next slot when one is due sooner: the
tick reports the slots due within the horizon, so a daemon wakes up for a slot rather than
finding it up to a horizon late. A tick is one indexed query when nothing is due.
"""

import time

from django.utils import timezone

from atp.schedules import ticking

#: Longest a daemon goes without looking for due slots, in seconds.
HORIZON = 0.5


class ScheduleClock:
    """The daemon's timer for ticking; ``due_at`` is a ``time.monotonic()`` moment."""

    def __init__(self) -> None:
        self.due_at = 0.0

    def tick(self) -> int:
        """Tick now and set the next tick; return how many runs were enqueued."""
        # Set first: should the tick fail (the database went away), the daemon's backoff
        # decides when to try again, not a timer stuck in the past.
        self.due_at = time.monotonic() + HORIZON
        result = ticking.tick(horizon=HORIZON)
        if result.next_due is not None:
            wait = (result.next_due - timezone.now()).total_seconds()
            self.due_at = time.monotonic() + max(0.0, wait)
        return result.enqueued
