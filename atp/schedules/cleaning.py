"""Checking what callers hand to ``register_schedule``: each bad value is an InvalidInput
naming its field, raised before anything is written."""

import re
from datetime import timedelta

from atp import validation
from atp.exceptions import InvalidInput
from atp.models import Schedule, TaskType
from atp.schedules.slots import expand_cron, zone

#: Longest schedule name: a run's identifier is ``<name>@<YYYY-MM-DDTHH:MM:SSZ>`` (21 more
#: characters) or ``<name>@now-<12 hex digits>`` (17 more), within the 64 of an identifier.
NAME_MAX_LENGTH = 40
NAME = re.compile(r"[A-Za-z0-9_.:-]+")

#: ``enqueue_task`` options a schedule may give its runs. Absolute times (``run_after``,
#: ``eta``, ``expires`` as a datetime) and ``parent`` mean nothing for a run that repeats.
RUN_OPTIONS = ("priority", "queue", "expires", "countdown")


def name(value) -> str:
    """A schedule name: letters, digits and ``_ . : -``, at most 40 characters."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise InvalidInput(
            f"name must be letters, digits, '_', '.', ':' or '-' (no spaces, no '@'), not {value!r}"
        )
    if len(value) > NAME_MAX_LENGTH:
        raise InvalidInput(
            f"name {value[:20]!r}... is {len(value)} characters long; the limit is "
            f"{NAME_MAX_LENGTH} (a run's identifier adds the slot time)"
        )
    return value


def task_type(value) -> TaskType:
    """The registered task type ``value`` names (an identifier or a TaskType)."""
    identifier = value.identifier if isinstance(value, TaskType) else value
    if not isinstance(identifier, str):
        raise InvalidInput(f"task_type must be a task type identifier, not {value!r}")
    found = TaskType.objects.filter(identifier=identifier).first()
    if found is None:
        raise InvalidInput(
            f"task_type {identifier!r} is not registered; register it with "
            "tracker.register_task_type first"
        )
    return found


def every(value) -> int:
    """An interval as whole seconds, at least 1: a number or a timedelta."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    seconds = validation.number(seconds, "every", minimum=1)
    if seconds != int(seconds):
        raise InvalidInput(f"every must be a whole number of seconds, not {value!r}")
    return int(seconds)


def timing(cron, every_value, timezone) -> dict:
    """``cron``/``every``/``timezone`` as stored: exactly one of cron and every."""
    if (cron is None) == (every_value is None):
        given = "both" if cron is not None else "neither"
        raise InvalidInput(f"give exactly one of cron and every, not {given}")
    zone(timezone)  # checked for both kinds, so a typo never waits to be found
    if cron is not None:
        return {"cron": expand_cron(cron), "every": None, "timezone": timezone}
    return {"cron": "", "every": every(every_value), "timezone": timezone}


def catch_up(value) -> str:
    """One of ``"one"``, ``"all"``, ``"skip"``."""
    if value not in Schedule.CatchUp.values:
        raise InvalidInput(
            f"catch_up must be one of {', '.join(map(repr, Schedule.CatchUp.values))}, "
            f"not {value!r}"
        )
    return value


def run_options(options: dict) -> dict:
    """The runs' ``enqueue_task`` options, as JSON values (seconds for durations)."""
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {unknown} for a schedule's runs; valid: {list(RUN_OPTIONS)}"
        )
    cleaned = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "priority":
            cleaned[key] = validation.integer(value, key)
        elif key == "queue":
            cleaned[key] = validation.identifier(value, key)
        else:  # expires, countdown: seconds after the run is enqueued
            seconds = value.total_seconds() if isinstance(value, timedelta) else value
            cleaned[key] = validation.number(seconds, key, minimum=0)
    return cleaned


def schedule(
    schedule_name, task, cron, every_value, timezone, input, enabled, catch_up_value, options
) -> dict:
    """Every field of a schedule, checked; raises InvalidInput naming the first bad one."""
    values = {"name": name(schedule_name), "task_type": task_type(task)}
    values.update(timing(cron, every_value, timezone))
    values["input"] = validation.json_input(input, f"schedule {schedule_name!r}")
    if not isinstance(enabled, bool):
        raise InvalidInput(f"enabled must be True or False, not {enabled!r}")
    values["enabled"] = enabled
    values["catch_up"] = catch_up(catch_up_value)
    values["options"] = run_options(options)
    return values
