"""Concurrent enqueuers of one slot on PostgreSQL: the unique constraint keeps one run.

Threads, each on its own database connection, start at one common moment, so their
transactions overlap for real: the later inserts wait on the unique index for the first
to commit, then are refused and return the existing run without an error.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction

from atp import schedules
from atp.models import LogRecord, Schedule, TaskInstance, Worker
from atp.schedules import runs, ticking

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RACERS = 8


def race(target) -> list:
    """Run ``target()`` in RACERS threads released together; return their results."""
    barrier = threading.Barrier(RACERS)
    results: list = [None] * RACERS
    errors: list = []

    def racer(index):
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            results[index] = target()
        except Exception as exc:  # reported below, with the thread's own traceback lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results


@pytest.fixture
def schedule(task_type):
    Worker.objects.create(server_id="0xRACE", hostname="h", pid=1)
    return schedules.register_schedule("race", task_type.identifier, every=60)


def test_concurrent_enqueues_of_one_slot_make_one_run(schedule):
    schedule = Schedule.objects.select_related("task_type").get()
    slot = schedule.next_slot

    def enqueue():
        with transaction.atomic():
            result = runs.enqueue_run(schedule, slot)
            time.sleep(0.2)  # hold the insert uncommitted: the others queue behind it
            return result

    results = race(enqueue)
    (task,) = TaskInstance.objects.all()
    assert sorted(created for _, created in results) == [False] * (RACERS - 1) + [True]
    assert {task_id for task_id, _ in results} == {task.pk}
    assert LogRecord.objects.filter(instance=task, event="task-sent").count() == 1


def test_concurrent_ticks_fire_each_slot_once(schedule):
    due = schedule.next_slot + timedelta(seconds=1)
    results = race(lambda: ticking.tick(due).enqueued)
    assert sum(results) == 1
    assert TaskInstance.objects.count() == 1
    assert Schedule.objects.get().next_slot == schedule.next_slot + timedelta(seconds=60)
