"""System checks: configuration mistakes reported by ``manage.py check`` and at start-up."""

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register(checks.Tags.database, deploy=False)
def check_sqlite_transaction_mode(app_configs=None, databases=None, **kwargs):
    """Warn when SQLite runs without IMMEDIATE transactions, which ATP's claims rely on."""
    found = []
    for alias, config in django_settings.DATABASES.items():
        if "sqlite3" not in config.get("ENGINE", ""):
            continue
        if config.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
            found.append(
                checks.Warning(
                    f"Database {alias!r} is SQLite without transaction_mode 'IMMEDIATE'.",
                    hint="Set DATABASES[...]['OPTIONS']['transaction_mode'] = 'IMMEDIATE' so "
                    "concurrent ATP writers queue for the lock instead of failing with "
                    "'database is locked'.",
                    id="atp.W001",
                )
            )
    return found


@checks.register()
def check_atp_settings(app_configs=None, **kwargs):
    """Report unknown or malformed keys in ``settings.ATP``."""
    from atp.conf import settings

    try:
        limit = settings.MAX_QUEUE_SIZE
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="atp.E001")]
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        return [
            checks.Error(
                f"ATP['MAX_QUEUE_SIZE'] must be a positive integer or None, not {limit!r}.",
                id="atp.E002",
            )
        ]
    return []


@checks.register()
def check_duplicate_task_names(app_configs=None, **kwargs):
    """Error when two ``@task`` functions share one task type name (``atp.E110``)."""
    from atp import discovery

    return [
        checks.Error(
            f"Two or more @task functions are named {name!r}: {', '.join(handlers)}.",
            hint="Give all but one of them another name=; until then none of them is enqueued "
            "or synced under that name.",
            id="atp.E110",
        )
        for name, handlers in sorted(discovery.clashes().items())
    ]


@checks.register(checks.Tags.database)
def check_stale_task_types(app_configs=None, databases=None, **kwargs):
    """Warn about task types whose handler no longer imports (``atp.W110``); never delete them.

    A database check: it runs with ``manage.py check --database default`` and ``migrate``
    (and ``atpd`` logs the same at start).
    """
    from django.db import DatabaseError

    from atp import discovery

    if not databases or "default" not in databases:
        return []
    try:
        stale = discovery.stale_task_types()
    except DatabaseError:  # not migrated yet: nothing to report
        return []
    return [
        checks.Warning(
            f"Task type {identifier!r} has the handler {handler!r}, which does not import "
            f"({why}); its waiting tasks will fail.",
            hint="Restore the function, register the type with its new handler, or remove "
            "the type with tracker.unregister_task_type() once its tasks are gone.",
            id="atp.W110",
        )
        for identifier, handler, why in stale
    ]
