"""Checks on what callers hand to the tracker, each failing with a clear ``InvalidInput``.

Everything here runs before the tracker writes anything, so bad input leaves nothing behind.
Every number and moment has a bound: a value past it would overflow a datetime sum in a
sweep, a database column or an SQL ``LIMIT``, and crash whoever reads it later (the daemons).
The bounds are enforced again by the schema's CHECK constraints (migration 0011).
"""

import json
import math
import numbers
import re
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.module_loading import import_string

from atp.exceptions import InvalidInput

IDENTIFIER_MAX_LENGTH = 64
#: Longest duration ATP accepts (timeouts, retention, retry backoff, time limits, countdown,
#: expires): 10 years of 365 days. ``now ± MAX_SECONDS`` is always a valid datetime.
MAX_SECONDS = 10 * 365 * 24 * 3600
#: Priorities: the range of a 32-bit integer column, checked on every database (SQLite's
#: integers are 64-bit, PostgreSQL's ``integer`` column is not).
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
#: Largest count a type may set (max_queue_size, max_retries, maxrestart): a 32-bit column.
MAX_COUNT = 2**31 - 1
#: Most claims a rate limit may allow per period; more is no limit in practice, and the
#: count becomes an SQL ``LIMIT`` at every claim.
MAX_RATE = 1_000_000
#: Earliest and latest moment a task may carry (run_after/eta, expires): one day inside
#: Python's datetime range, so that showing it in any time zone stays representable.
MIN_MOMENT = datetime(1, 1, 2, tzinfo=UTC)
MAX_MOMENT = datetime(9999, 12, 30, tzinfo=UTC)

_ASCII_INT = re.compile(r"[0-9]{1,19}")
_RATE = re.compile(r"\s*([0-9]{1,19})\s*/\s*([smh])\s*")
#: Escapes in JSON text (``json.dumps`` with ASCII output) that may stand for a NUL or a
#: surrogate code point; only then are the strings of a value walked one by one.
_SUSPECT_ESCAPES = ("\\u0000", "\\ud")


def storable(value: str) -> bool:
    """Whether both databases can store the text ``value``.

    PostgreSQL refuses NUL characters in text and JSON, and neither database can encode a
    lone surrogate (``"\\ud800"``, which JSON escapes can produce) as UTF-8.
    """
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(value, name: str) -> str:
    """Return ``value`` if it is a string the databases can store (see ``storable``)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, not {type(value).__name__}: {value!r}")
    if not storable(value):
        raise InvalidInput(
            f"{name} contains a NUL character or a lone surrogate, which cannot be stored"
        )
    return value


def identifier(value, what: str = "identifier") -> str:
    """Return ``value`` if it is a non-empty storable string of at most 64 characters."""
    text(value, what)
    if not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > IDENTIFIER_MAX_LENGTH:
        raise InvalidInput(
            f"{what} {value[:20]!r}... is {len(value)} characters long; "
            f"the limit is {IDENTIFIER_MAX_LENGTH}"
        )
    return value


def json_input(value, where: str):
    """Return ``value`` if it is plain JSON that both databases can store.

    No NaN or infinity, no objects JSON cannot represent, no NUL characters or lone
    surrogates in any string or key. ATP stores task input as JSON, never pickle: an
    enqueuer cannot make a worker run code.
    """
    try:
        dumped = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(
            f"input of {where} is not JSON-serialisable ({exc}); pass dicts, lists, strings, "
            "numbers, booleans and None only"
        ) from exc
    # The text is ASCII: a NUL or a surrogate can only hide behind these escapes, so the
    # (slower) walk over every string runs only when one occurs.
    if any(escape in dumped for escape in _SUSPECT_ESCAPES):
        bad = _unstorable_string(value)
        if bad is not None:
            raise InvalidInput(
                f"input of {where} holds the string {bad[:40]!r} with a NUL character or a "
                "lone surrogate, which cannot be stored"
            )
    return value


def _unstorable_string(value) -> str | None:
    """The first string (value or key) of a JSON-able ``value`` that is not storable."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not storable(item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def handler_path(path, type_identifier: str) -> str:
    """Return ``path`` if it imports and names a callable."""
    if not isinstance(path, str) or "." not in path or not storable(path):
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


def number(value, name: str, *, minimum=None, exclusive=False, maximum=None, allow_none=False):
    """Return ``value`` as a float if it is a finite real number within the bounds.

    ``minimum`` is inclusive unless ``exclusive``; ``maximum`` is inclusive.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"{name} must be a finite number, not {value!r}")
    try:
        result = float(value)
    except OverflowError:  # an int too large for a float
        result = math.inf
    if not math.isfinite(result):
        raise InvalidInput(f"{name} must be a finite number, not {value!r}")
    if minimum is not None and (result <= minimum if exclusive else result < minimum):
        relation = "greater than" if exclusive else "at least"
        raise InvalidInput(f"{name} must be {relation} {minimum}, not {value!r}")
    if maximum is not None and result > maximum:
        raise InvalidInput(f"{name} must be at most {maximum:g}, not {value!r}")
    return result


def seconds(value, name: str, *, minimum=0, exclusive=False, allow_none=False):
    """Return a duration in seconds (a float) from ``minimum`` up to ``MAX_SECONDS``."""
    result = number(value, name, minimum=minimum, exclusive=exclusive, allow_none=allow_none)
    if result is not None and abs(result) > MAX_SECONDS:
        raise InvalidInput(
            f"{name} must be at most {MAX_SECONDS} seconds (10 years) either way, not {value!r}"
        )
    return result


def integer(value, name: str, *, minimum=None, maximum=None, allow_none=False):
    """Return ``value`` if it is an int (not a bool) between ``minimum`` and ``maximum``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidInput(f"{name} must be at most {maximum}, not {value!r}")
    return value


def priority(value, name: str = "priority") -> int:
    """Return ``value`` if it is an integer priority from ``PRIORITY_MIN`` to ``PRIORITY_MAX``."""
    return integer(value, name, minimum=PRIORITY_MIN, maximum=PRIORITY_MAX)


def count(value, name: str, *, minimum=0, allow_none=False):
    """Return ``value`` if it is an integer from ``minimum`` to ``MAX_COUNT``."""
    return integer(value, name, minimum=minimum, maximum=MAX_COUNT, allow_none=allow_none)


def moment(value, name: str, now: datetime) -> datetime | None:
    """Return an aware datetime from a datetime or a number of seconds from ``now``.

    Seconds may be negative (a moment in the past) but at most ``MAX_SECONDS`` either way;
    a datetime must lie between ``MIN_MOMENT`` and ``MAX_MOMENT``.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            raise InvalidInput(f"{name} must be timezone-aware, not the naive {value!r}")
        return within_range(value, name)
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return now + timedelta(seconds=seconds(value, name, minimum=-MAX_SECONDS))


def within_range(value: datetime, name: str) -> datetime:
    """Return the aware ``value`` if it lies between ``MIN_MOMENT`` and ``MAX_MOMENT``.

    Comparing aware datetimes never converts them, so even a moment whose UTC form is past
    year 9999 (``9999-12-31T23:59-12:00``) is compared without overflowing.
    """
    if not MIN_MOMENT <= value <= MAX_MOMENT:
        raise InvalidInput(
            f"{name} {value.isoformat()} is out of range; give a time between "
            f"{MIN_MOMENT:%Y-%m-%d} and {MAX_MOMENT:%Y-%m-%d} UTC"
        )
    return value


def ascii_int(value) -> int | None:
    """The int spelt by ``value`` in ASCII digits 0-9 (at most 19 of them), else None.

    ``str.isdigit`` also accepts ``"²"`` and other digits ``int()`` refuses; this does not.
    """
    if isinstance(value, str):
        stripped = value.strip()
        if _ASCII_INT.fullmatch(stripped):
            return int(stripped)
    return None


def rate(value, name: str = "rate_limit") -> str:
    """Return a rate limit such as ``"10/m"`` (or ``""`` for none) if it parses.

    The count is at most ``MAX_RATE``.
    """
    if value in (None, ""):
        return ""
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(f'{name} must look like "10/m" (per s, m or h), not {value!r}')
    amount, unit = int(match.group(1)), match.group(2)
    if amount > MAX_RATE:
        raise InvalidInput(f"{name} allows at most {MAX_RATE} per period, not {value!r}")
    return f"{amount}/{unit}"
