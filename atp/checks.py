"""System checks: configuration mistakes reported by ``manage.py check`` and at start-up.

``ATPConfig.ready`` registers them (by importing this module), and ``atpd`` runs
``settings_errors`` itself before it touches anything, so a daemon started with
``call_command`` (which skips the system checks) refuses bad settings too.
"""

from django.conf import settings as django_settings
from django.core import checks


# Not tagged "database": Django runs database-tagged checks only with --database, and this
# one reads nothing but the settings, so plain `manage.py check` must show it.
@checks.register()
def check_sqlite_transaction_mode(app_configs=None, **kwargs):
    """Warn when SQLite runs without IMMEDIATE transactions, which ATP's claims rely on."""
    found = []
    for alias, config in django_settings.DATABASES.items():
        if "sqlite3" not in config.get("ENGINE", ""):
            continue
        if config.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
            found.append(
                checks.Warning(
                    f"Database {alias!r} is SQLite without transaction_mode 'IMMEDIATE'.",
                    hint="Set DATABASES[...]['OPTIONS'] = {'transaction_mode': 'IMMEDIATE', "
                    "'timeout': 30} (README, 'SQLite') so concurrent ATP writers queue for "
                    "the lock instead of failing with 'database is locked'.",
                    id="atp.W001",
                )
            )
    return found


@checks.register()
def check_atp_settings(app_configs=None, **kwargs):
    """Report unknown, malformed or inconsistent values in ``settings.ATP``."""
    return settings_problems()


def settings_problems() -> list[checks.CheckMessage]:
    """Every problem of ``settings.ATP``: one rule per setting (atp.conf), then relations."""
    from atp.conf import RULES, Defaults
    from atp.setting_rules import DATABASE_RETRY_MAX_PAUSE, relations

    user = getattr(django_settings, "ATP", None)
    if user is None:
        user = {}
    if not isinstance(user, dict):
        return [checks.Error(f"settings.ATP must be a dict, not {user!r}.", id="atp.E001")]
    unknown = sorted(set(user) - set(RULES))
    if unknown:
        return [
            checks.Error(
                f"Unknown key(s) in settings.ATP: {unknown}; known settings: {sorted(RULES)}",
                id="atp.E001",
            )
        ]
    values = {name: user.get(name, getattr(Defaults, name)) for name in RULES}
    found: list[checks.CheckMessage] = []
    for name, rule in RULES.items():
        if rule is None:  # declared without setting(default, rule): tests/unit catches it
            continue
        problem = rule(values[name])
        if problem:
            found.append(
                checks.Error(f"ATP[{name!r}] {problem}, not {values[name]!r}.", id="atp.E002")
            )
    for level, message in relations(values, max_backoff=DATABASE_RETRY_MAX_PAUSE):
        if level == "error":
            found.append(checks.Error(f"{message}.", id="atp.E003"))
        else:
            found.append(checks.Warning(f"{message}.", id="atp.W002"))
    return found


def settings_errors() -> list[checks.CheckMessage]:
    """The problems of ``settings.ATP`` that must stop a daemon (errors, not warnings)."""
    return [problem for problem in settings_problems() if problem.is_serious()]
