"""Registering schedules and steering them: the API of ``atp.schedules``."""

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone as dj_timezone

from atp import validation
from atp.conf import settings
from atp.exceptions import InvalidInput, ScheduleNotFound
from atp.models import Schedule
from atp.schedules import cleaning, runs
from atp.schedules.slots import Timing, expand_cron, timing_of, zone

logger = logging.getLogger("atp.schedules")

#: The fields that decide a schedule's slots: changing one starts its slots anew from now.
TIMING_FIELDS = ("cron", "every", "timezone")


def register_schedule(
    name,
    task_type,
    *,
    cron=None,
    every=None,
    timezone="UTC",
    input=None,
    enabled=True,
    catch_up="one",
    **enqueue_options,
) -> Schedule:
    """Create or update (by ``name``) a schedule that enqueues ``task_type`` at its slots.

    Parameters: ``name`` (letters, digits, ``_ . : -``; at most 40 characters),
    ``task_type`` (a registered type's identifier), exactly one of ``cron`` (five fields,
    or ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``) and ``every``
    (whole seconds ≥ 1, or a timedelta), ``timezone`` (the IANA zone the cron is read in),
    ``input`` (each run's JSON input), ``enabled``, ``catch_up`` (``"one"``, ``"all"`` or
    ``"skip"``: which slots missed while no daemon ran, or while the schedule was
    disabled, still run), and ``enqueue_task`` options for the runs (``priority``,
    ``queue``, ``expires`` and ``countdown`` in seconds).

    Raises InvalidInput naming the bad field; nothing is written then. Returns the Schedule.
    """
    values = cleaning.schedule(
        name, task_type, cron, every, timezone, input, enabled, catch_up, enqueue_options
    )
    return save(values, source=Schedule.Source.CODE)


def save(values: dict, source: str, keep_enabled: bool = False) -> Schedule:
    """Create or update the schedule of checked ``values`` (see ``cleaning.schedule``).

    A new schedule, or one whose timing changed, starts its slots from now. Enabling a
    disabled one runs the slots it missed by its ``catch_up``. ``keep_enabled`` keeps an
    existing row's enabled state (the settings sync, so an operator's pause holds).
    """
    for attempt in range(2):
        try:
            with transaction.atomic():
                return _save(values, source, keep_enabled)
        except IntegrityError:
            # Two callers created the same new name at once (daemons syncing the setting
            # as they start): the other one won; the second try updates its row.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _save(values: dict, source: str, keep_enabled: bool) -> Schedule:
    now = dj_timezone.now()
    schedule = (
        Schedule.objects.select_for_update()
        .select_related("task_type")
        .filter(name=values["name"])
        .first()
    )
    if schedule is None:
        schedule = Schedule(checked_until=now, source=source, **values)
        schedule.next_slot = next(timing_of(schedule).after(now), None)
        schedule.save()
        logger.info("Registered schedule %s: %s", schedule.name, schedule.describe())
        return schedule
    if keep_enabled:
        values = {**values, "enabled": schedule.enabled}
    changed = {key for key, value in values.items() if getattr(schedule, key) != value}
    if not changed and schedule.source == source:
        return schedule
    was_enabled = schedule.enabled
    for key, value in values.items():
        setattr(schedule, key, value)
    schedule.source = source
    if changed & set(TIMING_FIELDS):
        schedule.checked_until = now  # the old timing's slots are not missed slots of the new
    if schedule.enabled and not was_enabled:
        _catch_up_disabled(schedule, now)
    schedule.next_slot = next(timing_of(schedule).after(schedule.checked_until), None)
    schedule.save()
    logger.info(
        "Updated schedule %s (%s): %s",
        schedule.name,
        ", ".join(sorted(changed)),
        schedule.describe(),
    )
    return schedule


def unregister_schedule(name) -> bool:
    """Delete the schedule ``name``; its runs stay (they are ordinary tasks).

    Returns whether there was one.
    """
    deleted, _ = Schedule.objects.filter(name=name).delete()
    if deleted:
        logger.info("Unregistered schedule %s", name)
    return bool(deleted)


def pause_schedule(name) -> Schedule:
    """Disable schedule ``name``: no runs until resumed. ScheduleNotFound if unknown."""
    with transaction.atomic():
        schedule = _locked(name)
        if schedule.enabled:
            schedule.enabled = False
            schedule.save(update_fields=["enabled", "updated_at"])
            logger.info("Paused schedule %s", name)
    return schedule


def resume_schedule(name) -> Schedule:
    """Enable schedule ``name`` again. ScheduleNotFound if unknown.

    The slots that passed while it was disabled were missed: its ``catch_up`` picks which of
    them run now (the latest, all, or none); then it goes on from now.
    """
    with transaction.atomic():
        schedule = _locked(name)
        if not schedule.enabled:
            now = dj_timezone.now()
            schedule.enabled = True
            _catch_up_disabled(schedule, now)
            schedule.next_slot = next(timing_of(schedule).after(now), None)
            schedule.save()
            logger.info("Resumed schedule %s", name)
    return schedule


def _catch_up_disabled(schedule: Schedule, now: datetime) -> None:
    """Run the slots missed while disabled, by ``catch_up``; then go on from ``now``."""
    limit = settings.SCHEDULE_CATCH_UP_MAX
    missed, _ = timing_of(schedule).latest(schedule.checked_until, now, limit)
    for slot in runs.choose_missed(missed, schedule.catch_up):
        task_id, _ = runs.enqueue_run(schedule, slot, catch_up=True)
        schedule.last_task_id = task_id or schedule.last_task_id
    schedule.checked_until = now


def run_now(name) -> int:
    """Enqueue an extra run of schedule ``name`` now; return its task id.

    The run has its own identifier, ``<name>@now-<12 hex digits>``, and leaves the slots
    alone. ScheduleNotFound if unknown; QueueFull if its queue is full.
    """
    with transaction.atomic():
        schedule = _locked(name)
        task_id = runs.enqueue_extra(schedule)
        schedule.last_task_id = task_id
        schedule.save(update_fields=["last_task_id", "updated_at"])
    return task_id


def _locked(name) -> Schedule:
    schedule = (
        Schedule.objects.select_for_update().select_related("task_type").filter(name=name).first()
    )
    if schedule is None:
        raise ScheduleNotFound(f"no schedule is named {name!r}")
    return schedule


def next_runs(cron_or_name, count=5, timezone="UTC", after=None) -> list[datetime]:
    """The next ``count`` slots strictly after ``after`` (default now), as aware UTC datetimes.

    ``cron_or_name`` is a cron expression read in ``timezone``, or the name of a schedule
    (then its own cron and time zone, or interval, count; ``timezone`` is ignored).
    """
    count = validation.integer(count, "count", minimum=0)
    if after is None:
        after = dj_timezone.now()
    elif not isinstance(after, datetime) or dj_timezone.is_naive(after):
        raise InvalidInput(f"after must be an aware datetime, not {after!r}")
    if isinstance(cron_or_name, str) and cleaning.NAME.fullmatch(cron_or_name):
        schedule = Schedule.objects.filter(name=cron_or_name).first()
        if schedule is None:
            raise InvalidInput(
                f"cron_or_name {cron_or_name!r} is neither a cron expression nor the name "
                "of a schedule"
            )
        timing = timing_of(schedule)
    else:
        zone(timezone)
        timing = Timing(cron=expand_cron(cron_or_name), timezone=timezone)
    slots: list[datetime] = []
    for slot in timing.after(after):
        if len(slots) == count:
            break
        slots.append(slot)
    return slots
