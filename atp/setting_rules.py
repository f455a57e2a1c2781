"""Rules ATP's settings must obey (atp.conf): each takes a value, returns a problem or None.

A problem is the end of a sentence that starts with the setting's name, for example
``ATP['POLL_INTERVAL'] must be a number greater than 0, not 'fast'``.
"""

import math
import sys
from importlib.util import find_spec
from urllib.parse import urlsplit

#: The event relay's broker URL schemes, the modules each needs, and the extra that
#: installs them (``pip install 'django-atp[redis]'``).
BROKERS = {
    "redis": (("celery", "kombu", "redis", "packaging"), "redis"),
    "rediss": (("celery", "kombu", "redis", "packaging"), "redis"),
    "amqp": (("celery", "kombu", "amqp"), "amqp"),
    "amqps": (("celery", "kombu", "amqp"), "amqp"),
    "pyamqp": (("celery", "kombu", "amqp"), "amqp"),
}


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return find_spec(module) is not None
    except ValueError:  # imported already, by a loader that left no spec: it is there
        return sys.modules.get(module) is not None


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(value) -> str | None:
    """An integer of at least 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return "must be an integer of at least 1"
    return None


def boolean(value) -> str | None:
    """True or False."""
    if not isinstance(value, bool):
        return "must be True or False"
    return None


def positive_number(value) -> str | None:
    """A finite number (int or float) greater than 0: seconds, intervals."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        return "must be a number greater than 0"
    return None


def path(value) -> str | None:
    """A non-empty path (text or ``os.PathLike``)."""
    if hasattr(value, "__fspath__"):
        return None
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty path"
    return None


def mapping(value) -> str | None:
    """A dict (its entries are checked where they are used)."""
    if not isinstance(value, dict):
        return "must be a dict"
    return None


def text(value) -> str | None:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    return None


def postgresql_alias(value) -> str | None:
    """The alias of a PostgreSQL database in ``settings.DATABASES``."""
    from django.conf import settings

    if not isinstance(value, str) or not value:
        return "must be the alias of a database in settings.DATABASES"
    known = sorted(settings.DATABASES)
    if value not in known:
        return f"must be the alias of a database in settings.DATABASES (known: {known})"
    engine = settings.DATABASES[value].get("ENGINE", "")
    if not engine.endswith(("postgresql", "postgis")):
        return (
            f"must name a PostgreSQL database (LISTEN/NOTIFY needs one; its ENGINE is {engine!r})"
        )
    return None


def optional(check):
    """``check``, or None (the setting's feature is off)."""

    def optional_check(value) -> str | None:
        return None if value is None else check(value)

    optional_check.__doc__ = f"None, or: {check.__doc__}"
    return optional_check


def broker_url(value) -> str | None:
    """A redis:// or amqp:// URL whose client libraries are installed."""
    if not isinstance(value, str) or not value:
        return "must be a broker URL (redis://… or amqp://…) or None"
    scheme = urlsplit(value).scheme
    if scheme not in BROKERS:
        return f"must be a redis:// or amqp:// URL (scheme {scheme!r} is not supported)"
    modules, extra = BROKERS[scheme]
    missing = [name for name in modules if not _installed(name)]
    if missing:
        return (
            f"needs the module(s) {', '.join(missing)}, which are not installed: "
            f"pip install 'django-atp[{extra}]'"
        )
    return None


def relations(values: dict, max_backoff: float) -> list[tuple[str, str]]:
    """Problems between settings: ``(level, message)`` pairs, level "error" or "warning".

    ``max_backoff`` is the longest pause of a daemon retrying an unreachable database: a
    daemon may miss heartbeats for that long plus one interval during a short outage.
    """
    found: list[tuple[str, str]] = []
    beat, timeout = values["HEARTBEAT_INTERVAL"], values["WORKER_TIMEOUT"]
    if positive_number(beat) or positive_number(timeout):
        return found  # already reported on their own
    if beat >= timeout:
        found.append(
            (
                "error",
                f"ATP['HEARTBEAT_INTERVAL'] ({beat!r}) must be smaller than "
                f"ATP['WORKER_TIMEOUT'] ({timeout!r}): every daemon would look lost between "
                "two of its heartbeats",
            )
        )
    elif timeout < beat + max_backoff:
        found.append(
            (
                "warning",
                f"ATP['WORKER_TIMEOUT'] ({timeout!r}) is shorter than a heartbeat interval "
                f"plus the daemon's longest database retry pause ({beat!r} + {max_backoff!r}): "
                "a daemon that loses the database for a moment may be declared lost and its "
                "tasks restarted elsewhere",
            )
        )
    return found
