"""What PostgreSQL's statistics say about a table without scanning it (the admin's lists on
big tables): its estimated rows, a query's planned rows, a column's value frequencies.
"""

import json

from django.db import connection

from atp.sql.vendor import is_postgresql


def estimated_table_rows(table: str) -> int | None:
    """PostgreSQL's estimate of a table's row count (``pg_class.reltuples``), no scan.

    None when unknown: not PostgreSQL, or the table was never vacuumed/analysed (-1).
    """
    if not is_postgresql():
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


def planned_rows(queryset) -> int | None:
    """The planner's row estimate for a queryset (``EXPLAIN``), without running it."""
    if not is_postgresql():
        return None
    query, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + query, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):  # psycopg2 parses json columns; another driver may not
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def column_frequencies(table: str, column: str) -> dict[int, float]:
    """PostgreSQL's most-common-value frequencies of an integer column (``pg_stats``).

    For a low-cardinality column (a status, a foreign key to a few types) these cover
    every value; empty when not PostgreSQL or never analysed.
    """
    if not is_postgresql():
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_vals::text::bigint[], most_common_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = %s AND attname = %s",
            [table, column],
        )
        row = cursor.fetchone()
    if not row or row[0] is None:
        return {}
    return dict(zip(row[0], row[1], strict=True))
