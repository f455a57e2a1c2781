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
