"""The PostgreSQL plan of a query, to check that an index can serve it."""

from django.db import connection


def plan(queryset, *, gin=False, ordered=False) -> str:
    """The PostgreSQL plan of ``queryset`` with sequential scans discouraged.

    The test tables are tiny, so the planner would scan them anyway; turning seq scans off
    shows whether an index *can* serve the query, which is what a 1M-row table needs.
    ``gin``: plain index scans are discouraged too. A GIN index is only ever read by a
    bitmap scan, and on a tiny table the primary key read backwards (the default order)
    with a filter can look cheaper, depending on what earlier tests left in the planner's
    statistics; without plain index scans, only the GIN index can spare the penalty.
    ``ordered``: sorting is discouraged too, so an index that yields the order wins if
    there is one (on a tiny table, sorting a few rows otherwise looks cheaper).
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        if gin:
            cursor.execute("SET LOCAL enable_indexscan = off")
        if ordered:
            cursor.execute("SET LOCAL enable_sort = off")
        sql, params = queryset.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())
