"""Schedules declared in ``settings.ATP["SCHEDULES"]``, synced when a daemon starts."""

import logging

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from atp.conf import settings
from atp.exceptions import InvalidInput
from atp.models import Schedule
from atp.schedules import cleaning, registry

logger = logging.getLogger("atp.schedules")

#: Keys of a declared schedule besides the ``enqueue_task`` options of ``cleaning.RUN_OPTIONS``.
KEYS = ("task", "cron", "every", "timezone", "input", "enabled", "catch_up")


def declared() -> tuple[dict[str, dict], dict[str, bool]]:
    """Every declared schedule, checked: (name → field values, name → keep its state).

    A declared schedule without ``enabled`` keeps the enabled state it has in the database.

    Raises ImproperlyConfigured naming the schedule and the bad field, before anything is
    written, so a typo in one schedule changes none of them.
    """
    entries = settings.SCHEDULES or {}
    if not isinstance(entries, dict):
        raise ImproperlyConfigured(
            f'ATP["SCHEDULES"] must be a dict of name -> schedule, not {type(entries).__name__}'
        )
    checked, keep = {}, {}
    for name, entry in entries.items():
        try:
            if not isinstance(entry, dict):
                raise InvalidInput("must be a dict such as {'task': ..., 'cron': ...}")
            if "task" not in entry:
                raise InvalidInput("task is missing: the identifier of the task type to run")
            options = {key: value for key, value in entry.items() if key not in KEYS}
            checked[name] = cleaning.schedule(
                name,
                entry["task"],
                entry.get("cron"),
                entry.get("every"),
                entry.get("timezone", "UTC"),
                entry.get("input"),
                entry.get("enabled", True),
                entry.get("catch_up", "one"),
                options,
            )
            keep[name] = "enabled" not in entry
        except InvalidInput as exc:
            raise ImproperlyConfigured(f'ATP["SCHEDULES"][{name!r}]: {exc}') from exc
    return checked, keep


def sync_declared_schedules() -> tuple[list[str], list[str]]:
    """Make the schedules table match the setting; return (names saved, names removed).

    Declared schedules are created or updated (an entry without ``enabled`` keeps the state
    an operator set, so a schedule paused in the admin stays paused across restarts).
    Schedules that came from the setting and left it are deleted; those registered in code
    or in the admin are never touched.
    """
    wanted, keep = declared()
    saved = []
    with transaction.atomic():
        for name, values in wanted.items():
            registry.save(values, source=Schedule.Source.SETTINGS, keep_enabled=keep[name])
            saved.append(name)
        gone = Schedule.objects.declared().exclude(name__in=wanted)
        removed = sorted(gone.values_list("name", flat=True))
        gone.delete()
    for name in removed:
        logger.info("Removed schedule %s: it left ATP['SCHEDULES']", name)
    return saved, removed
