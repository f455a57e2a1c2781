"""Tasks ended per type and status, for the metrics: tallies counted up to a mark.

Counting the ended tasks on every scrape reads the whole history (849 ms at ten million
tasks). Instead each scrape counts only the tasks that ended after the previous scrape's
mark (``EndTallyMark``), a range of the retention index ``atp_task_retention`` (type,
finished_at, on ended rows), adds them to the tallies (``EndTally``, a row per type and
status) and moves the mark, in one transaction. The first scrape, with no mark yet, counts
every ended task kept. The daemon writes nothing for this: ending a task costs the same.

What a tally means: the tasks of its type that ended in its status (their ``finished_at``)
at or before the mark, each counted once, whether or not the retention sweep has deleted
it since; so it only grows. The mark trails the scrape by ``LAG``: an end committed up to
``LAG`` after its ``finished_at`` (a slow transaction, a clock behind) is still counted.
Not counted: an end committed later than that, and a task the retention sweep deleted
before a scrape counted it (a ``timeret`` shorter than the scrape interval plus ``LAG``).
"""

from datetime import datetime, timedelta

from django.db import router, transaction
from django.db.models import Count, F

from atp.models import TERMINAL, EndTally, EndTallyMark, TaskInstance, TaskType

#: How far the mark trails the scrape's clock (see the module docstring).
LAG = timedelta(seconds=60)


def ended_totals(now: datetime) -> dict[tuple[int, int], int]:
    """Count the ends up to ``now - LAG`` into the tallies; return ``{(type id, status): n}``.

    Runs on the database Django's router picks for writing the tallies (the primary).
    """
    using = router.db_for_write(EndTally)
    advance(now - LAG, using)
    tallies = EndTally.objects.using(using).values_list("type_id", "status", "total")
    return {(type_id, status): total for type_id, status, total in tallies}


def advance(through: datetime, using: str) -> bool:
    """Add the ends after the mark up to ``through`` to the tallies and move the mark there.

    Returns False, counting nothing, when the mark is already there or past it, or when
    another scrape moved it meanwhile (and counted those ends itself).
    """
    since = read_mark(using)
    if since is not None and since >= through:
        return False
    with transaction.atomic(using=using):
        # Conditional on the mark read above: of two scrapes at once, the second waits for
        # the first's row lock (SQLite: its write lock), then matches no row.
        moved = (
            EndTallyMark.objects.using(using)
            .filter(pk=1, counted_through=since)
            .update(counted_through=through)
        )
        if not moved:
            return False
        for (type_id, status), n in ended_between(since, through, using).items():
            tally = EndTally.objects.using(using).filter(type_id=type_id, status=status)
            if not tally.update(total=F("total") + n):
                EndTally.objects.using(using).create(type_id=type_id, status=status, total=n)
    return True


def read_mark(using: str) -> datetime | None:
    """Where the tallies have counted up to; None before the first scrape."""
    mark, _ = EndTallyMark.objects.using(using).get_or_create(pk=1)
    return mark.counted_through


def ended_between(
    since: datetime | None, through: datetime, using: str
) -> dict[tuple[int, int], int]:
    """``{(type id, status): n}`` of ``ended_rows(since, through, using)``."""
    counts = ended_rows(since, through, using).values_list("type_id", "status")
    return {(type_id, status): n for type_id, status, n in counts.annotate(n=Count("pk"))}


def ended_rows(since: datetime | None, through: datetime, using: str):
    """The tasks that ended after ``since`` (None: ever) up to ``through`` (a QuerySet).

    Every type is named: the retention index leads with the type, so PostgreSQL reads one
    range of it per type (and the rows in it, for their status), not the history.
    """
    type_ids = list(TaskType.objects.using(using).values_list("pk", flat=True))
    ended = (
        TaskInstance.objects.using(using)
        .order_by()
        .filter(type_id__in=type_ids, status__in=sorted(TERMINAL), finished_at__lte=through)
    )
    if since is not None:
        ended = ended.filter(finished_at__gt=since)
    return ended
