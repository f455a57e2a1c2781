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
