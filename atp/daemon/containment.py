"""How the daemon keeps serving when one step of its loop fails with an error.

``atp.daemon.db.classify`` sorts a step's exception: an outage or a busy database is
retried (the engine's ``_db``); an *error* (a poison row, a bad value, a bug) would fail
the same way again, so it is contained to what caused it:

- recording outcomes: the batch is recorded again one outcome per savepoint; an outcome
  that still cannot be recorded ends its task as a failed attempt, by its type's rules
  (``record_singly``);
- claiming: the task types whose claim fails are found by trial claims that are rolled
  back, and held back for ``HOLD`` seconds (``Quarantine``); the other types keep running;
- handing attempts to the pool, heartbeats, sweeps: logged with the traceback and retried
  at their next turn (the engine).
"""

import logging
import time
from contextlib import contextmanager

from django.db import transaction
from django.utils import timezone

from atp.daemon.db import classify
from atp.models import TaskInstance

logger = logging.getLogger("atp.daemon")

#: Seconds a task type whose claim fails with an error is left out of claims.
HOLD = 60.0
#: Most task types one search for a poison type tries.
MAX_SUSPECTS = 50


class StepFailed(Exception):
    """An error (not an outage) in the step ``step`` of the loop; the cause is chained."""

    def __init__(self, step: str):
        super().__init__(step)
        self.step = step


@contextmanager
def step(name: str):
    """Tag an error raised in the block with the step's name; outages pass unchanged."""
    try:
        yield
    except StepFailed:
        raise
    except Exception as exc:
        if classify(exc) == "error":
            raise StepFailed(name) from exc
        raise


class _Undo(Exception):
    """Rolls a trial claim back."""


class Quarantine:
    """Task types held back from claims because claiming them fails with an error."""

    def __init__(self, log):
        self.log = log
        self.until: dict[int, float] = {}  # type id → time.monotonic() it may be tried again

    def excluded(self) -> list[int]:
        """The ids of the types held back now."""
        now = time.monotonic()
        for type_id in [type_id for type_id, until in self.until.items() if until <= now]:
            del self.until[type_id]
            self.log.info("Claims of task type id %d resume", type_id)
        return sorted(self.until)

    def search(self, claim, queues) -> list[int]:
        """Find the types whose claim fails and hold them back; return their ids.

        ``claim(exclude)`` claims one task, leaving out the types ``exclude``. Each type
        with due tasks is tried alone, inside a savepoint that is always rolled back, so
        the trials claim nothing. Call inside a transaction.
        """
        suspects = _due_types(queues, self.excluded())
        found = []
        for type_id in suspects:
            others = [other for other in suspects if other != type_id] + self.excluded()
            try:
                with transaction.atomic():
                    claim(others)
                    raise _Undo
            except _Undo:
                continue
            except Exception as exc:
                if classify(exc) != "error":
                    raise
                self.until[type_id] = time.monotonic() + HOLD
                found.append(type_id)
                self.log.error(
                    "Claims of task type id %d held back for %g s: claiming it fails with %s",
                    type_id,
                    HOLD,
                    f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
        return found


def _due_types(queues, excluded) -> list[int]:
    """Ids of the task types that have due tasks (in ``queues``), but not ``excluded``."""
    due = TaskInstance.objects.ready(timezone.now()).exclude(type_id__in=excluded)
    if queues:
        due = due.filter(queue__in=list(queues))
    return list(due.order_by().values_list("type_id", flat=True).distinct()[:MAX_SUSPECTS])
