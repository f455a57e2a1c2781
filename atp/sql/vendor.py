"""Which database the default connection is: the question every vendor-specific statement asks."""

from django.db import connection


def is_postgresql() -> bool:
    """Whether the default database is PostgreSQL."""
    return connection.vendor == "postgresql"
