"""ATP's settings: typed defaults, read live from ``settings.ATP`` on every access."""

from dataclasses import dataclass, fields

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class Defaults:
    """Every ATP setting with its default; the README documents each one."""

    #: Waiting (ACCEPTED) tasks allowed in the shared queue; None = no limit.
    MAX_QUEUE_SIZE: int | None = 64
    #: Seconds an idle daemon sleeps between polls when no wake-up arrives.
    POLL_INTERVAL: float = 1.5
    #: A daemon runs the zombie and retention sweeps after this many dequeues (and when idle).
    CLEANUP_EVERY: int = 300
    #: Seconds a claimed task may stay SCHEDULED (not started) before a sweep gives it back.
    CLAIM_TIMEOUT: float = 60.0
    #: Seconds between a daemon's heartbeats.
    HEARTBEAT_INTERVAL: float = 2.0
    #: Seconds without a heartbeat after which a daemon is presumed dead.
    WORKER_TIMEOUT: float = 10.0
    #: Broker URL the daemons relay events to (redis://, amqp://); None = events stay in the DB.
    EVENTS_BROKER_URL: str | None = None
    #: Root directory of subprocess jobs' working directories.
    JOB_ROOT: str = "var/jobs"
    #: Default number of handler slots per daemon; None = the CPU count.
    CONCURRENCY: int | None = None
    #: Most attempts one pool slot holds while handlers are short: the running one plus
    #: those claimed ahead (see atp.daemon.pool). 1 turns prefetching off.
    PREFETCH: int = 32
    #: Rows deleted per statement by the retention sweep.
    CLEANUP_BATCH_SIZE: int = 500
    #: Declared schedules, name -> {"task": ..., "cron" or "every": ..., ...}; each daemon
    #: syncs them when it starts (atp.schedules.declared). None = none.
    SCHEDULES: dict | None = None
    #: Most missed slots one schedule enqueues at once with catch_up="all" (the latest ones).
    SCHEDULE_CATCH_UP_MAX: int = 1000
    #: Bearer token that may read ``atp/metrics`` without a Django login; None = logins only.
    METRICS_TOKEN: str | None = None


_NAMES = {f.name for f in fields(Defaults)}


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
