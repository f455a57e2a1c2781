"""Database-connection policy of long-running ATP processes (daemon and pool children)."""

from django.db import InterfaceError, OperationalError, close_old_connections, connections

#: Errors that mean "the database is unreachable right now", as opposed to a bad query.
CONNECTION_ERRORS = (OperationalError, InterfaceError)


def use_persistent_connections() -> None:
    """Keep this process's connections open across tasks, whatever ``CONN_MAX_AGE`` says.

    ``CONN_MAX_AGE`` is written for web requests; a worker that reconnects for every task
    runs about three times slower. Broken connections are still replaced: see ``heal``.
    """
    for connection in connections.all():
        connection.settings_dict["CONN_MAX_AGE"] = None
        connection.close_at = None


def heal() -> None:
    """Close connections that errored and no longer answer, so the next query reconnects."""
    close_old_connections()


def drop_all() -> None:
    """Close every connection of this process (after an outage, before retrying)."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except CONNECTION_ERRORS:
            connection.connection = None


def database_url(alias: str = "default") -> str:
    """The URL of the database ``alias`` uses right now, for a subprocess's ``DATABASE_URL``.

    Inside a test run this is the test database, so daemons started by tests and
    benchmarks see exactly the rows their parent wrote.
    """
    db = connections[alias].settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
