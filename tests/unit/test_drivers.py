"""Each leg of make test runs on the driver and Django it claims to (ATP_EXPECT_* variables)."""

import os

import django
import pytest
from django.db import connection

from atp.sql import driver


def current_driver() -> str:
    """ "sqlite", or the PostgreSQL driver Django chose: "psycopg" (3) or "psycopg2"."""
    if connection.vendor == "sqlite":
        return "sqlite"
    connection.ensure_connection()
    return driver.driver_name(connection.connection)


@pytest.mark.django_db
def test_the_database_driver_is_the_one_this_leg_tests():
    expected = os.environ.get("ATP_EXPECT_DRIVER")
    if not expected:
        pytest.skip("ATP_EXPECT_DRIVER is not set (make test sets it per leg)")
    assert current_driver() == expected


def test_django_is_the_version_this_leg_tests():
    expected = os.environ.get("ATP_EXPECT_DJANGO")
    if not expected:
        pytest.skip("ATP_EXPECT_DJANGO is not set (make test-django6 sets it)")
    assert django.VERSION[0] == int(expected)


@pytest.mark.postgres
@pytest.mark.django_db
def test_sqlstate_reads_django_errors_of_either_driver():
    from django.db import DatabaseError, transaction

    with pytest.raises(DatabaseError) as caught, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")
    assert driver.sqlstate(caught.value) == "22012"  # division_by_zero
