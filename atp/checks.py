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
    from atp.conf import DB_RETRY_MAX_BACKOFF, RULES, Defaults
    from atp.setting_rules import relations

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
    # The engine's longest pause retrying an unreachable database: a daemon may go that
    # long plus one heartbeat interval without heartbeating.
    for level, message in relations(values, max_backoff=DB_RETRY_MAX_BACKOFF):
        if level == "error":
            found.append(checks.Error(f"{message}.", id="atp.E003"))
        else:
            found.append(checks.Warning(f"{message}.", id="atp.W002"))
    return found


def settings_errors() -> list[checks.CheckMessage]:
    """The problems of ``settings.ATP`` that must stop a daemon (errors, not warnings)."""
    return [problem for problem in settings_problems() if problem.is_serious()]


@checks.register()
def check_pooled_default(app_configs=None, **kwargs):
    """Warn about Django options that need a server session when "default" is pooled.

    ``ATP['LISTEN_DATABASE']`` set says that "default" goes through a transaction-pooling
    proxy (PgBouncer's ``pool_mode = transaction``), where each transaction may run on
    another server session: ``atp.W003`` when Django may use server-side cursors there
    (``.iterator()``: the query API's ``iter_tasks``, the metrics, ``state_from_events``),
    ``atp.W004`` when psycopg 3 may prepare statements there.
    """
    user = getattr(django_settings, "ATP", None)
    if not isinstance(user, dict) or not user.get("LISTEN_DATABASE"):
        return []
    default = django_settings.DATABASES.get("default", {})
    if not default.get("ENGINE", "").endswith(("postgresql", "postgis")):
        return []
    options = default.get("OPTIONS", {})
    found = []
    if not default.get("DISABLE_SERVER_SIDE_CURSORS"):
        found.append(
            checks.Warning(
                "ATP['LISTEN_DATABASE'] is set, so 'default' goes through a transaction "
                "pooler, and Django may use server-side cursors on it.",
                hint="Set DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'] = True: a "
                "cursor lives in one server session and the pooler may run the next FETCH "
                "in another ('cursor does not exist'; README, 'Behind PgBouncer').",
                id="atp.W003",
            )
        )
    if options.get("server_side_binding") is True and options.get("prepare_threshold") is not None:
        found.append(
            checks.Warning(
                "ATP['LISTEN_DATABASE'] is set, so 'default' goes through a transaction "
                "pooler, and psycopg 3 prepares statements on it (server_side_binding with "
                "a prepare_threshold).",
                hint="Remove OPTIONS['prepare_threshold'] (Django's default, None, prepares "
                "nothing) unless the pooler keeps prepared statements per client (PgBouncer "
                "1.21 or later with max_prepared_statements set).",
                id="atp.W004",
            )
        )
    return found


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
