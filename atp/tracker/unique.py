"""Unique tasks: one task per type and ``unique_key`` while it waits, runs or is recent.

``enqueue_task(..., unique_key="sync-42")`` creates a task only when no task of the same
type holds that key: none that has not ended, and, with ``unique_for=seconds``, none
enqueued less than that long ago (ended or not). Otherwise it returns the holder's id and
writes nothing. Check and insert must be one atomic step even between processes: each
enqueuer first takes a transaction-scoped advisory lock per key (``sql.lock_unique_keys``;
SQLite serialises its writers anyway), so the check that follows sees every task another
enqueuer of the key committed. The partial unique index ``atp_task_unique_active`` is the
database's own guarantee behind it for tasks that have not ended; the ``unique_for`` window
reaches ended tasks, which that index does not hold, so the lock is what covers it.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q

from atp import sql
from atp.models import UNIQUE_HELD, TaskInstance


@dataclass(frozen=True)
class Plan:
    """What to do with each item of a batch: insert it, or answer with another task's id.

    ``create`` holds the positions of the items to insert, in order; ``sources`` has one
    entry per item: ``("new", n)`` (the n-th inserted task) or ``("held", task id)``.
    """

    create: list[int]
    sources: list[tuple[str, int]]

    def resolve(self, new_ids: list[int]) -> tuple[list[int], list[bool]]:
        """Each item's task id, and whether the call created it (first item of a key only)."""
        ids, created, seen = [], [], set()
        for kind, value in self.sources:
            if kind == "held":
                ids.append(value)
                created.append(False)
            else:
                ids.append(new_ids[value])
                created.append(value not in seen)
                seen.add(value)
        return ids, created


def plan(keys: list[str | None], held: dict[str, int]) -> Plan:
    """Plan a batch whose items have ``keys`` (None: not unique), ``held`` keys → task id."""
    create: list[int] = []
    sources: list[tuple[str, int]] = []
    first: dict[str, int] = {}
    for position, key in enumerate(keys):
        if key is not None and key in held:
            sources.append(("held", held[key]))
        elif key is not None and key in first:
            sources.append(("new", first[key]))  # repeated in the batch: one task
        else:
            if key is not None:
                first[key] = len(create)
            sources.append(("new", len(create)))
            create.append(position)
    return Plan(create, sources)


def held_keys(task_type, keys, unique_for: float | None, now) -> dict[str, int]:
    """Lock ``keys`` of ``task_type`` and return those a task holds now: key → its task id.

    Call inside the enqueue transaction, before inserting: the locks last until it ends.
    """
    keys = sorted({key for key in keys if key is not None})
    if not keys:
        return {}
    sql.lock_unique_keys(task_type.pk, keys)
    holding = Q(status__in=sorted(UNIQUE_HELD))
    if unique_for:
        holding |= Q(enqueued_at__gte=now - timedelta(seconds=unique_for))
    rows = (
        TaskInstance.objects.filter(holding, type_id=task_type.pk, unique_key__in=keys)
        .order_by("unique_key", "-id")
        .values_list("unique_key", "id")
    )
    held: dict[str, int] = {}
    for key, task_id in rows:
        held.setdefault(key, task_id)  # the newest holder of each key
    return held
