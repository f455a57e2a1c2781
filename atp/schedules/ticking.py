"""Ticking: enqueue the runs of the slots that came due. Every daemon ticks; none leads.

A tick reads the enabled schedules whose next slot is due (an indexed query that returns
nothing most of the time). Each due schedule is then handled in a transaction of its own
that locks its row with SKIP LOCKED: daemons ticking at the same moment share the due
schedules instead of queueing behind one another, and the row's ``checked_until`` moves on
in the same transaction as the runs it enqueued. Should two daemons still enqueue the same
slot (SQLite has no row locks; a row can change between the read and the lock), the task
table's unique (type, identifier) constraint keeps one run: the locks save work, the
constraint is the guarantee.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, transaction
from django.utils import timezone

from atp.conf import settings
from atp.models import Schedule
from atp.schedules import runs
from atp.schedules.slots import timing_of

logger = logging.getLogger("atp.schedules")


@dataclass(frozen=True)
class Tick:
    """What a tick did: runs it created, and the next slot due within the horizon."""

    enqueued: int
    next_due: datetime | None


def tick(now: datetime | None = None, horizon: float = 0.5) -> Tick:
    """Enqueue the runs of every due schedule; report the next slot due within ``horizon`` s.

    Knowing the next slot lets the daemon wake up right at it instead of polling.
    """
    now = now or timezone.now()
    upcoming = Schedule.objects.upcoming(now + timedelta(seconds=horizon))
    rows = list(upcoming.values_list("pk", "next_slot"))
    enqueued = sum(fire(pk, now) for pk, slot in rows if slot <= now)
    return Tick(enqueued, min((slot for _, slot in rows if slot > now), default=None))


def fire(schedule_id: int, now: datetime) -> int:
    """Handle one due schedule: enqueue its runs up to ``now``; return how many are new.

    The slots after ``checked_until`` up to ``now`` are pending. Those at whose time a
    daemon ran are late, not missed, and all run: a busy or stalled daemon loses no slot.
    Those no daemon saw were missed, and the schedule's ``catch_up`` picks which run.
    A schedule that fails for another reason than the database is logged and skipped, so
    it cannot stop the daemon; it is tried again at the next tick.
    """
    try:
        with transaction.atomic():
            schedule = (
                Schedule.objects.select_for_update(skip_locked=True)
                .select_related("task_type")
                .filter(pk=schedule_id, enabled=True, next_slot__lte=now)
                .first()
            )
            if schedule is None:
                return 0  # another daemon holds it, or it is no longer due
            return _fire(schedule, now)
    except DatabaseError:
        raise  # the daemon's outage handling takes it from here
    except Exception:
        logger.exception("Schedule %s: tick failed", schedule_id)
        return 0


def _fire(schedule: Schedule, now: datetime) -> int:
    limit = settings.SCHEDULE_CATCH_UP_MAX
    pending, dropped = timing_of(schedule).latest(schedule.checked_until, now, limit)
    if dropped:
        logger.warning(
            "Schedule %s: more than %d slots pending since %s; the older ones are dropped",
            schedule.name,
            limit,
            schedule.checked_until.isoformat(),
        )
    spans = runs.daemon_lifetimes(schedule.checked_until, now)
    missed = [slot for slot in pending if not runs.covered(slot, spans)]
    chosen = runs.choose_missed(missed, schedule.catch_up)
    if len(missed) > len(chosen):
        logger.info(
            "Schedule %s: %d missed slot(s) not run (catch_up=%s)",
            schedule.name,
            len(missed) - len(chosen),
            schedule.catch_up,
        )
    created = 0
    for slot in pending:
        late = slot in missed
        if late and slot not in chosen:
            continue
        task_id, new = runs.enqueue_run(schedule, slot, catch_up=late)
        created += new
        schedule.last_task_id = task_id or schedule.last_task_id
    schedule.checked_until = now
    schedule.next_slot = next(timing_of(schedule).after(now), None)
    schedule.save(update_fields=["checked_until", "next_slot", "last_task_id", "updated_at"])
    return created
