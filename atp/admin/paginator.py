"""A paginator that never counts a whole big table on each page load (PostgreSQL)."""

from django.core.paginator import Paginator
from django.utils.functional import cached_property

from atp import sql

#: Up to this many matching rows the count is exact; beyond it, an estimate is shown.
EXACT_COUNT_LIMIT = 10_000


def estimated_count(queryset, limit: int = EXACT_COUNT_LIMIT) -> int:
    """Count ``queryset``'s rows exactly when few, else estimate them cheaply.

    On PostgreSQL an unfiltered table uses ``pg_class.reltuples``; a filtered one is counted
    with ``LIMIT limit + 1`` (bounded work) and, past the limit, the planner's estimate is
    used. Other databases count exactly (SQLite is the small, embedded case).
    """
    if not sql.is_postgresql():
        return queryset.count()
    if not queryset.query.where:
        estimate = sql.estimated_table_rows(queryset.model._meta.db_table)
        if estimate is not None and estimate > limit:
            return estimate
    bounded = queryset.order_by()[: limit + 1].count()
    if bounded <= limit:
        return bounded
    return max(limit + 1, sql.planned_rows(queryset) or 0)


class EstimatedCountPaginator(Paginator):
    """Django's paginator with ``count`` from ``estimated_count``."""

    @cached_property
    def count(self) -> int:
        """The (possibly estimated) number of rows; see ``estimated_count``."""
        return estimated_count(self.object_list)
