"""The inactivity limit: a running handler silent for its type's ``timeout`` is a zombie.

A type's ``timeout`` is the seed's: seconds without an update of the task, measured from
its last update (every transition, ``task_status.heartbeat()``, ``set_progress``), not
from its start. A handler that keeps reporting may run as long as it needs; the
wall-clock limit is ``hard_time_limit`` alone (``Daemon._enforce_time_limits``).

Tasks owned by a live daemon are out of the zombie sweep's reach (it would run them
twice while their handler still runs), so the owning daemon applies the limit to its own
handlers: at each of its heartbeats it reads their tasks' last update and kills those
silent for longer than their timeout; the restart rule (``tracker.restart_or_fail``)
then re-enqueues or fails the task, as the sweep would.
"""

import time
from datetime import datetime, timedelta

from django.utils import timezone

from atp.daemon.pool import Slot
from atp.models import TaskInstance

#: How a kill for silence starts its reason (the daemon records it as ``TimeoutError``).
SILENT = "silent"


def silent_slots(slots: list[Slot], quiet_from: datetime) -> list[tuple[Slot, float]]:
    """The running ``slots`` whose task has had no update for longer than its timeout.

    Returns ``(slot, seconds of silence)`` pairs. Silence is counted from the task's last
    update, the handler's start, or ``quiet_from`` (when the daemon last regained the
    database: a handler cannot report while it is away), whichever is latest.
    """
    running = {
        slot.attempt.task_id: (slot, slot.attempt)
        for slot in slots
        if slot.attempt is not None and not slot.kill_reason
    }
    if not running:
        return []
    now, monotonic = timezone.now(), time.monotonic()
    silent = []
    updates = TaskInstance.objects.filter(pk__in=running).values_list("pk", "updated_at")
    for task_id, updated_at in updates:
        slot, attempt = running[task_id]
        started = now - timedelta(seconds=monotonic - slot.started)
        quiet = (now - max(updated_at, started, quiet_from)).total_seconds()
        if quiet > attempt.timeout:
            silent.append((slot, quiet))
    return silent


def silence_reason(timeout: float, quiet: float) -> str:
    """The kill reason recorded for a handler silent for ``quiet`` seconds."""
    return (
        f"{SILENT} for {quiet:.1f} s, longer than its timeout of {timeout:g} s (no update: "
        "a long handler calls task_status.heartbeat())"
    )
