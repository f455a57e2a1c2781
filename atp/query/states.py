"""Task states by name: ATP's statuses and the Celery state names Flower-style tools use."""

from atp.exceptions import InvalidInput
from atp.models import Status

#: The Celery state each ATP status is shown as (``as_dict()["state"]``, events, the API).
CELERY_STATE = {
    Status.UNDEFINED: "UNDEFINED",
    Status.ACCEPTED: "PENDING",
    Status.SCHEDULED: "RECEIVED",
    Status.RUNNING: "STARTED",
    Status.PAUSED: "PAUSED",
    Status.FINISHED: "SUCCESS",
    Status.FAILED: "FAILURE",
    Status.REVOKED: "REVOKED",
    Status.WAITING: "WAITING",
    Status.BLOCKED: "BLOCKED",
}

#: Celery states no ATP task is ever in: a filter on them is valid and matches nothing.
#: (A retried ATP task is PENDING again, with ``retries`` counting its retries.)
UNUSED_CELERY_STATES = frozenset({"RETRY", "REJECTED", "IGNORED"})


def _names() -> dict[str, frozenset[int]]:
    names: dict[str, frozenset[int]] = {name: frozenset() for name in UNUSED_CELERY_STATES}
    for status, celery in CELERY_STATE.items():
        for name in (celery, status.label):
            names[name] = names.get(name, frozenset()) | {status.value}
    return names


_BY_NAME = _names()

#: Every accepted state name, ATP's and Celery's, sorted.
STATE_NAMES = tuple(sorted(_BY_NAME))


def state_name(status: int) -> str:
    """The Celery state name of an ATP status code, for example ``5`` → ``"SUCCESS"``."""
    return CELERY_STATE[Status(status)]


def statuses_for(name) -> frozenset[int]:
    """The status codes a state name stands for; Celery and ATP names, any case.

    ``"SUCCESS"`` and ``"FINISHED"`` both give ``{5}``; ``"RETRY"`` gives the empty set (a
    Celery state ATP never uses). An unknown name raises InvalidInput listing the valid ones.
    """
    if isinstance(name, Status):
        return frozenset({name.value})
    key = str(name).strip().upper()
    if key not in _BY_NAME:
        raise InvalidInput(f"unknown task state {name!r}; valid states: {', '.join(STATE_NAMES)}")
    return _BY_NAME[key]
