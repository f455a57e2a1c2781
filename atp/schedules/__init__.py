"""Periodic tasks: schedules that enqueue a task type at the slots of a cron or an interval.

Each slot's run is an ordinary task named ``<name>@<YYYY-MM-DDTHH:MM:SSZ>``; the task table's
unique (type, identifier) constraint makes it run once however many daemons tick. One job per
module: ``slots`` (when: cron in a time zone with the DST rules, or intervals on the epoch),
``cleaning`` (checking what callers give), ``registry`` (the API below), ``runs`` (enqueueing
a run; which missed slots run), ``ticking`` (what each daemon does every tick) and
``declared`` (``ATP["SCHEDULES"]``, synced when a daemon starts).
"""

from atp.schedules.declared import sync_declared_schedules
from atp.schedules.registry import (
    next_runs,
    pause_schedule,
    register_schedule,
    resume_schedule,
    run_now,
    save,
    unregister_schedule,
)

__all__ = [
    "next_runs",
    "pause_schedule",
    "register_schedule",
    "resume_schedule",
    "run_now",
    "save",
    "sync_declared_schedules",
    "unregister_schedule",
]
