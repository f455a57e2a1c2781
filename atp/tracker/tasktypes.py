"""Registering, updating and removing task types."""

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

from atp import validation
from atp.exceptions import InvalidInput
from atp.models import TaskType
from atp.tracker.core import _get_type
from atp.tracker.deleting import delete_tasks

logger = logging.getLogger("atp.tracker")


#: Options ``register_task_type`` accepts besides its named parameters, with their checks.
TYPE_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "priority": lambda v: validation.priority(v),
    "queue": lambda v: validation.identifier(v, "queue"),
    "max_queue_size": lambda v: validation.count(v, "max_queue_size", minimum=1, allow_none=True),
    "max_retries": lambda v: validation.count(v, "max_retries"),
    "retry_backoff": lambda v: validation.seconds(v, "retry_backoff"),
    "retry_backoff_max": lambda v: validation.seconds(v, "retry_backoff_max"),
    "rate_limit": validation.rate,
    "soft_time_limit": lambda v: validation.seconds(
        v, "soft_time_limit", exclusive=True, allow_none=True
    ),
    "hard_time_limit": lambda v: validation.seconds(
        v, "hard_time_limit", exclusive=True, allow_none=True
    ),
    "options": lambda v: _options_dict(v),
    "concurrency_limit": lambda v: validation.integer(
        v, "concurrency_limit", minimum=1, allow_none=True
    ),
}


#: Checks of ``register_task_type``'s named arguments (the tasks backend's system check
#: uses them too).
ARGUMENT_CHECKS = {
    "timeout": lambda v: validation.seconds(v, "timeout", exclusive=True),
    # ≤ 0 keeps ended tasks forever, however negative; only a retention time is bounded.
    "timeret": lambda v: validation.number(v, "timeret", maximum=validation.MAX_SECONDS),
    "maxrestart": lambda v: validation.count(v, "maxrestart"),
}


def _options_dict(value):
    if not isinstance(value, dict):
        raise InvalidInput(f"options must be a dict, not {value!r}")
    return validation.json_input(value, "task type options")


def register_task_type(identifier, handler, timeout=3600, timeret=-1, maxrestart=2, **options):
    """Create or update a task type (an upsert), checking every value first.

    Parameters: ``identifier`` (≤64 characters), ``handler`` (dotted path of a callable
    ``handler(task_status, input)``, imported now so a typo fails here, not in a worker),
    ``timeout`` (seconds without update before a task is a zombie, > 0), ``timeret`` (seconds
    ended tasks are kept; ≤0 keeps them forever), ``maxrestart`` (restarts before a task
    fails), and the options of ``TYPE_OPTIONS``. Durations are at most
    ``validation.MAX_SECONDS`` (10 years), counts at most ``validation.MAX_COUNT``. Options
    not given take their defaults, so the call describes the whole type. Returns the TaskType.
    """
    identifier, values = clean_task_type(
        identifier, handler, timeout, timeret, maxrestart, **options
    )
    task_type, created = TaskType.objects.update_or_create(identifier=identifier, defaults=values)
    logger.info(
        "%s task type %s -> %s", "Registered" if created else "Updated", identifier, handler
    )
    return task_type


def clean_task_type(identifier, handler, timeout=3600, timeret=-1, maxrestart=2, **options):
    """Check a task type's values as ``register_task_type`` does, without saving anything.

    Returns ``(identifier, field values)``; raises InvalidInput naming the bad value. The
    admin's task type form validates through this too, so both paths accept the same values.
    """
    identifier = validation.identifier(identifier, "task type identifier")
    handler = validation.handler_path(handler, identifier)
    timeout = ARGUMENT_CHECKS["timeout"](timeout)
    timeret = ARGUMENT_CHECKS["timeret"](timeret)
    maxrestart = ARGUMENT_CHECKS["maxrestart"](maxrestart)
    unknown = set(options) - set(TYPE_OPTIONS)
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {sorted(unknown)} for task type {identifier!r}; "
            f"valid options: {sorted(TYPE_OPTIONS)}"
        )
    values = {
        field.name: field.get_default()
        for field in TaskType._meta.concrete_fields
        if field.name in TYPE_OPTIONS
    }
    values.update({name: TYPE_OPTIONS[name](value) for name, value in options.items()})
    values.update(
        handler=handler,
        timeout=timeout,
        timeret=timeret if timeret > 0 else -1.0,
        maxrestart=maxrestart,
    )
    return identifier, values


def unregister_task_type(identifier, force=False):
    """Delete a task type; with ``force``, delete its tasks (and their logs) first.

    Raises UnknownTaskType, or InvalidInput when tasks exist and ``force`` is false.
    """
    with transaction.atomic():
        task_type = _get_type(identifier)
        count = task_type.instances.count()
        if count and not force:
            raise InvalidInput(
                f"task type {identifier!r} still has {count} task(s); "
                "pass force=True to delete them with it"
            )
        # Through the one delete rule: a subtask of another type's parent counts as revoked.
        delete_tasks(task_type.instances.all())
        task_type.delete()
    logger.info("Unregistered task type %s (%d task(s) deleted)", identifier, count)


def update_task_type(identifier, **options) -> TaskType:
    """Change some options of a registered task type (for example ``rate_limit``), leaving
    the others as they are; values are checked as ``register_task_type`` checks them.

    Raises UnknownTaskType or InvalidInput.
    """
    unknown = set(options) - set(TYPE_OPTIONS)
    if unknown:
        raise InvalidInput(f"unknown option(s) {sorted(unknown)}; valid: {sorted(TYPE_OPTIONS)}")
    values = {name: TYPE_OPTIONS[name](value) for name, value in options.items()}
    with transaction.atomic():
        task_type = _get_type(identifier)
        for name, value in values.items():
            setattr(task_type, name, value)
        task_type.save(update_fields=[*values, "updated_at"])
    logger.info("Updated task type %s: %s", task_type.identifier, values)
    return task_type
