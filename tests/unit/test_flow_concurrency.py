"""Concurrency limits per key: at most N tasks of a type and key claimed at once.

The claim decides (``atp.tracker.concurrency``) on both databases; the cross-daemon proof
with real processes is ``tests/acceptance/test_flow_daemons.py``.
"""

from collections import Counter

import pytest

from atp import tracker
from atp.daemon import workers
from atp.exceptions import InvalidInput
from atp.models import ACTIVE, TaskInstance, Worker
from tests.support.helpers import ago, nothing_written

pytestmark = pytest.mark.django_db


@pytest.fixture
def limited(db):
    """A type with ``concurrency_limit=2``."""
    return tracker.register_task_type(
        "test.limited", "tests.support.handlers.noop", concurrency_limit=2
    )


def _keys(attempts) -> Counter:
    tasks = TaskInstance.objects.in_bulk([attempt.task_id for attempt in attempts])
    return Counter(
        (tasks[a.task_id].type.identifier, tasks[a.task_id].concurrency_key) for a in attempts
    )


def test_each_key_gets_at_most_its_limit_while_others_are_claimed(limited, task_type):
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(5)], concurrency_key="a")
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(3)], concurrency_key="b")
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(3)])  # the shared key
    tracker.enqueue_tasks(task_type.identifier, [(None, n) for n in range(3)])
    attempts = tracker.claim_tasks("s1", limit=50)
    assert _keys(attempts) == {
        ("test.limited", "a"): 2,
        ("test.limited", "b"): 2,
        ("test.limited", None): 2,
        ("test.noop", None): 3,
    }
    assert all(a.limited == (a.type == "test.limited") for a in attempts)
    assert tracker.claim_tasks("s2", limit=50) == []  # every key is full, for every daemon
    # One place frees: exactly one more task of that key is claimed.
    done = next(a for a in attempts if _keys([a]) == {("test.limited", "a"): 1})
    tracker.stop_task_success(done.task_id, attempt=done.number)
    again = tracker.claim_tasks("s2", limit=50)
    assert _keys(again) == {("test.limited", "a"): 1}


def test_a_paused_task_still_holds_its_place(limited):
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(3)], concurrency_key="a")
    first, second = tracker.claim_tasks("s1", limit=5)
    tracker.pause_task(first.task_id)
    assert tracker.claim_tasks("s1", limit=5) == []


def test_dequeue_task_obeys_the_limit_too(limited):
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(4)], concurrency_key="a")
    assert len(tracker.dequeue_task("s1", limit=10)) == 2  # SCHEDULED counts as well
    with pytest.raises(tracker.QueueEmpty):
        tracker.dequeue_task("s1", limit=10)


def test_limited_caps_the_tasks_of_limited_types_a_claim_takes(limited, task_type):
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(4)], concurrency_key="a")
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(4)], concurrency_key="b")
    tracker.enqueue_tasks(task_type.identifier, [(None, n) for n in range(4)])
    attempts = tracker.claim_tasks("s1", limit=50, limited=1)
    counts = _keys(attempts)
    assert counts[("test.noop", None)] == 4
    assert sum(n for (name, _), n in counts.items() if name == "test.limited") == 1
    assert tracker.claim_tasks("s1", limit=50, limited=0) == []
    assert len(tracker.claim_tasks("s1", limit=50, limited=5)) == 3  # a: 1 more, b: 2


def test_a_lost_daemons_places_are_freed_by_its_recovery(limited):
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(3)], concurrency_key="a")
    workers.register_worker("dead")
    assert len(tracker.claim_tasks("dead", limit=5)) == 2
    assert tracker.claim_tasks("alive", limit=5) == []
    Worker.objects.filter(server_id="dead").update(heartbeat_at=ago(60))
    tracker.recover_lost_workers(10)
    assert not TaskInstance.objects.filter(status__in=ACTIVE).exists()
    assert len(tracker.claim_tasks("alive", limit=5)) == 2


def test_no_limit_means_keys_are_just_labels(task_type):
    tracker.enqueue_tasks(task_type.identifier, [(None, n) for n in range(5)], concurrency_key="a")
    assert len(tracker.claim_tasks("s1", limit=10)) == 5


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_a_bad_concurrency_limit_is_refused(db, value):
    with nothing_written(), pytest.raises(InvalidInput, match="concurrency_limit"):
        tracker.register_task_type(
            "test.bad", "tests.support.handlers.noop", concurrency_limit=value
        )
    tracker.register_task_type("test.ok", "tests.support.handlers.noop")
    with nothing_written(), pytest.raises(InvalidInput, match="concurrency_limit"):
        tracker.update_task_type("test.ok", concurrency_limit=value)


def test_the_limit_can_be_changed_and_removed(limited):
    tracker.enqueue_tasks(limited.identifier, [(None, n) for n in range(4)], concurrency_key="a")
    tracker.update_task_type(limited.identifier, concurrency_limit=3)
    assert len(tracker.claim_tasks("s1", limit=10)) == 3
    tracker.update_task_type(limited.identifier, concurrency_limit=None)
    assert len(tracker.claim_tasks("s1", limit=10)) == 1
