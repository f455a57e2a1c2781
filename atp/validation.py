"""Checks on what callers hand to the tracker, each failing with a clear ``InvalidInput``.

Everything here runs before the tracker writes anything, so bad input leaves nothing behind.
"""

import json
import math
import numbers
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.module_loading import import_string

from atp.exceptions import InvalidInput

IDENTIFIER_MAX_LENGTH = 64


def identifier(value, what: str = "identifier") -> str:
    """Return ``value`` if it is a non-empty string of at most 64 characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}: {value!r}")
    if not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > IDENTIFIER_MAX_LENGTH:
        raise InvalidInput(
            f"{what} {value[:20]!r}... is {len(value)} characters long; "
            f"the limit is {IDENTIFIER_MAX_LENGTH}"
        )
    return value


def json_input(value, where: str):
    """Return ``value`` if it is plain JSON (no NaN, no objects JSON cannot represent).

    ATP stores task input as JSON, never pickle: an enqueuer cannot make a worker run code.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"input of {where} is not JSON-serialisable ({exc}); pass dicts, lists, strings, "
            "numbers, booleans and None only"
        ) from exc
    return value


def handler_path(path, type_identifier: str) -> str:
    """Return ``path`` if it imports and names a callable."""
    if not isinstance(path, str) or "." not in path:
        raise InvalidInput(
            f"handler of task type {type_identifier!r} must be a dotted path such as "
            f"'myapp.tasks.resize', not {path!r}"
        )
    try:
        target = import_string(path)
    except Exception as exc:
        # Not only ImportError: a handler module with a bug (SyntaxError, NameError, ...)
        # does not import either, and must fail here with a clear error, not in a worker.
        raise InvalidInput(
            f"handler {path!r} of task type {type_identifier!r} does not import: {exc}"
        ) from exc
    if not callable(target):
        raise InvalidInput(f"handler {path!r} of task type {type_identifier!r} is not callable")
    return path


def number(value, name: str, *, minimum=None, exclusive=False, allow_none=False):
    """Return ``value`` as a float if it is a finite real number above the bound."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number, not {value!r}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        relation = "greater than" if exclusive else "at least"
        raise InvalidInput(f"{name} must be {relation} {minimum}, not {value!r}")
    return float(value)


def integer(value, name: str, *, minimum=None, allow_none=False):
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}, not {value!r}")
    return value


def moment(value, name: str, now: datetime) -> datetime | None:
    """Return an aware datetime from a datetime or a number of seconds from ``now``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            raise InvalidInput(f"{name} must be timezone-aware, not the naive {value!r}")
        return value
    if isinstance(value, timedelta):
        return now + value
    return now + timedelta(seconds=number(value, name))


def rate(value, name: str = "rate_limit") -> str:
    """Return a rate limit such as ``"10/m"`` (or ``""`` for none) if it parses."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        count, _, unit = value.partition("/")
        if count.strip().isdigit() and unit.strip() in ("s", "m", "h"):
            return f"{int(count)}/{unit.strip()}"
    raise InvalidInput(f'{name} must look like "10/m" (per s, m or h), not {value!r}')
