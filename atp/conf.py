"""ATP's settings: typed defaults, read live from ``settings.ATP`` on every access.

Each setting is one line of ``Defaults``: its default and the rule its value must pass
(atp.setting_rules). The system check ``atp.checks.check_atp_settings`` applies every rule,
so a new setting is validated by ``manage.py check`` and refused by ``atpd`` as soon as it
is declared here.
"""

from dataclasses import dataclass, field, fields

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from atp import setting_rules as rule


def setting(default, check):
    """A setting's default and the rule (a function of the value → problem or None) it obeys."""
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class Defaults:
    """Every ATP setting with its default and rule; the README documents each one."""

    #: Waiting (ACCEPTED) tasks allowed in the shared queue; None = no limit.
    MAX_QUEUE_SIZE: int | None = setting(64, rule.optional(rule.positive_int))
    #: Seconds an idle daemon sleeps between polls when no wake-up arrives.
    POLL_INTERVAL: float = setting(1.5, rule.positive_number)
    #: A daemon runs the zombie and retention sweeps after this many dequeues (and when idle).
    CLEANUP_EVERY: int = setting(300, rule.positive_int)
    #: Seconds a claimed task may stay SCHEDULED (not started) before a sweep gives it back.
    CLAIM_TIMEOUT: float = setting(60.0, rule.positive_number)
    #: Seconds between a daemon's heartbeats.
    HEARTBEAT_INTERVAL: float = setting(2.0, rule.positive_number)
    #: Seconds without a heartbeat after which a daemon is presumed dead.
    WORKER_TIMEOUT: float = setting(10.0, rule.positive_number)
    #: Broker URL the daemons relay events to (redis://, amqp://); None = events stay in the DB.
    EVENTS_BROKER_URL: str | None = setting(None, rule.optional(rule.broker_url))
    #: Root directory of subprocess jobs' working directories.
    JOB_ROOT: str = setting("var/jobs", rule.path)
    #: Default number of handler slots per daemon; None = the CPU count.
    CONCURRENCY: int | None = setting(None, rule.optional(rule.positive_int))
    #: Most attempts one pool slot holds while handlers are short: the running one plus
    #: those claimed ahead (see atp.daemon.pool). 1 turns prefetching off.
    PREFETCH: int = setting(32, rule.positive_int)
    #: Rows deleted per statement by the retention sweep.
    CLEANUP_BATCH_SIZE: int = setting(500, rule.positive_int)
    #: Run every enqueued task in the enqueuing process when its transaction commits
    #: (atp.testing); for tests and development, never for production.
    EAGER: bool = setting(False, rule.boolean)
    #: In eager mode, raise a failed task's error from the enqueue (else it is only stored).
    EAGER_PROPAGATE: bool = setting(False, rule.boolean)
    #: On PostgreSQL, a daemon records outcomes on a second connection, in a thread of its
    #: own, while its loop claims the next batch (atp.daemon.recorder); False: one
    #: connection, outcomes and claims in one transaction per loop.
    PARALLEL_RECORDING: bool = setting(True, rule.boolean)
    #: Database threads (so connections) the async handlers of one asyncio pool share
    #: (atp.daemon.asyncrun).
    ASYNC_DB_THREADS: int = setting(4, rule.positive_int)
    #: Declared schedules, name -> {"task": ..., "cron" or "every": ..., ...}; each daemon
    #: syncs them when it starts (atp.schedules.declared). None = none.
    SCHEDULES: dict | None = setting(None, rule.optional(rule.mapping))
    #: Most missed slots one schedule enqueues at once with catch_up="all" (the latest ones).
    SCHEDULE_CATCH_UP_MAX: int = setting(1000, rule.positive_int)
    #: Bearer token that may read ``atp/metrics`` without a Django login; None = logins only.
    METRICS_TOKEN: str | None = setting(None, rule.optional(rule.text))
    #: Longest ``timeout`` (seconds) the HTTP API's result and apply routes wait for a task;
    #: also how long apply waits when no timeout is given. Each wait holds a server thread.
    API_MAX_WAIT: float = setting(60.0, rule.positive_number)
    #: The alias (in ``settings.DATABASES``) of a direct connection to the default database
    #: for the daemons' LISTEN (atp.daemon.wakeup), for when "default" goes through a
    #: transaction-pooling proxy such as PgBouncer, where LISTEN hears nothing. None = the
    #: default database's own connection settings.
    LISTEN_DATABASE: str | None = setting(None, rule.optional(rule.postgresql_alias))


#: The daemon's longest pause, in seconds, between retries of an unreachable database
#: (``atp.daemon.engine``). Here because the settings checks need it too (a daemon may go
#: that long plus one heartbeat interval without heartbeating), and they must not import
#: the daemon.
DB_RETRY_MAX_BACKOFF = 5.0

_NAMES = {f.name for f in fields(Defaults)}

#: Each setting's rule, by name (see ``setting``).
RULES = {f.name: f.metadata.get("check") for f in fields(Defaults)}


class ATPSettings:
    """Attribute access to ``settings.ATP`` with defaults, read at each access.

    Reading live (no cache) keeps ``override_settings(ATP=...)`` working in tests.
    """

    def __getattr__(self, name: str):
        if name not in _NAMES:
            raise AttributeError(f"ATP has no setting {name!r}; known settings: {sorted(_NAMES)}")
        user = getattr(django_settings, "ATP", {}) or {}
        unknown = set(user) - _NAMES
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown key(s) in settings.ATP: {sorted(unknown)}; "
                f"known settings: {sorted(_NAMES)}"
            )
        return user.get(name, getattr(Defaults, name))


settings = ATPSettings()
