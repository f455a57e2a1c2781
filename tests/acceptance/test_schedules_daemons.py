"""Periodic tasks with real atpd processes on PostgreSQL: one run per slot, whatever happens.

Three daemons tick the same ``every=1`` schedule; no leader. The unique (type, identifier)
constraint of the task table is what makes each slot run once. The timing checks leave the
margins the issue states (1.5 s), on a loaded 2-core machine.
"""

import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from atp import schedules, tracker
from atp.models import LogRecord, Schedule, TaskInstance, Worker
from tests.support.atpd_process import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SLOT = "%Y-%m-%dT%H:%M:%SZ"
SECOND = timedelta(seconds=1)
#: Most a run may be enqueued after its slot (the issue's figure).
LATENESS = 1.5


def runs_by_slot(name: str) -> dict[datetime, dict]:
    """Every run of schedule ``name``: slot → {enqueued, catch_up, enqueued by}."""
    found = {}
    records = LogRecord.objects.filter(
        event="task-sent", instance__identifier__startswith=f"{name}@"
    ).select_related("instance")
    for record in records:
        slot = datetime.strptime(record.instance.identifier.split("@")[1], SLOT)
        found[slot.replace(tzinfo=UTC)] = {
            "enqueued": record.instance.enqueued_at,
            "catch_up": record.fields["catch_up"],
            "by": record.fields["hostname"],
            "slot": record.fields["slot"],
        }
    return found


def slots_between(start: datetime, end: datetime) -> list[datetime]:
    """The whole seconds in ``(start, end]``."""
    first = start.replace(microsecond=0) + SECOND
    return [first + k * SECOND for k in range(int((end - first) / SECOND) + 1)]


def start_daemons(daemons, count: int) -> list:
    before = set(Worker.objects.values_list("server_id", flat=True))
    procs = [daemons.start("-n", "1", "--pool", "threads") for _ in range(count)]
    wait_until(
        lambda: Worker.objects.running().exclude(server_id__in=before).count() == count,
        what=f"{count} daemons registered",
    )
    return procs


@pytest.fixture
def noop_type(db):
    return tracker.register_task_type("sched.noop", "tests.support.handlers.noop")


@pytest.mark.parametrize("kill_one", [False, True], ids=["three-daemons", "one-sigkilled"])
def test_every_slot_runs_once_with_three_daemons(daemons, noop_type, kill_one):
    procs = start_daemons(daemons, 3)
    schedule = schedules.register_schedule("tick", noop_type.identifier, every=1)
    start = schedule.checked_until
    time.sleep(7.5)
    if kill_one:
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
    time.sleep(7.5)
    # The slots up to LATENESS ago must all be there by now.
    end = timezone.now() - timedelta(seconds=LATENESS)
    runs = runs_by_slot("tick")
    expected = slots_between(start, end)
    assert len(expected) >= 12
    assert [slot for slot in expected if slot not in runs] == []  # none missing
    # None twice: one task per slot (the unique constraint), and one task-sent each.
    assert TaskInstance.objects.filter(identifier__startswith="tick@").count() == len(runs)
    sent = LogRecord.objects.filter(event="task-sent", instance__identifier__startswith="tick@")
    assert sent.count() == len(runs)
    late = {
        slot: (run["enqueued"] - slot).total_seconds()
        for slot, run in runs.items()
        if not 0 <= (run["enqueued"] - slot).total_seconds() <= LATENESS
    }
    assert late == {}  # each enqueued at or after its slot, within 1.5 s
    assert not any(run["catch_up"] for run in runs.values())
    assert all(run["slot"] == f"{slot:{SLOT}}" for slot, run in runs.items())
    enqueuers = {run["by"] for run in runs.values()}
    print(
        f"{len(runs)} slots; enqueued by {len(enqueuers)} daemon(s); lateness max "
        f"{max((r['enqueued'] - s).total_seconds() for s, r in runs.items()):.3f} s"
    )
    # The runs are ordinary tasks: the daemons ran them.
    wait_until(
        lambda: (
            TaskInstance.objects.filter(identifier__startswith="tick@", status=5).count()
            >= len(expected)
        ),
        what="the runs to finish",
    )


@pytest.mark.parametrize("catch_up", ["one", "all", "skip"])
def test_missed_slots_after_all_daemons_stopped_for_10_s(daemons, noop_type, catch_up):
    procs = start_daemons(daemons, 2)
    schedules.register_schedule("gap", noop_type.identifier, every=1, catch_up=catch_up)
    wait_until(lambda: len(runs_by_slot("gap")) >= 3, what="three runs before the stop")
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    stopped = timezone.now()
    last_before = max(runs_by_slot("gap"))
    time.sleep(10)
    restarted = timezone.now()
    start_daemons(daemons, 2)
    wait_until(
        lambda: (
            sum(
                not run["catch_up"] and slot > restarted
                for slot, run in runs_by_slot("gap").items()
            )
            >= 3
        ),
        what="three on-time runs after the restart",
    )
    runs = runs_by_slot("gap")
    after = sorted(slot for slot in runs if slot > last_before)
    on_time = [slot for slot in after if not runs[slot]["catch_up"]]
    caught_up = [slot for slot in after if runs[slot]["catch_up"]]
    first_on_time = on_time[0]
    # The gap: every slot between the last run before the stop and the first run after
    # the restart that a live daemon saw; no daemon ran during any of them.
    gap = slots_between(last_before, first_on_time - SECOND)
    assert len(gap) >= 10
    assert gap[0] >= stopped - timedelta(seconds=LATENESS)
    assert gap[-1] >= restarted - SECOND
    expected = {"one": gap[-1:], "all": gap, "skip": []}[catch_up]
    assert caught_up == expected
    # After the gap, the schedule goes on: every slot from the first on-time one.
    assert on_time == slots_between(first_on_time - SECOND, on_time[-1])
    print(
        f"catch_up={catch_up}: gap of {len(gap)} slots ({stopped:%H:%M:%S} stopped, "
        f"{restarted:%H:%M:%S} restarted), {len(caught_up)} run(s) for it"
    )


def test_a_daemon_syncs_the_declared_schedules_when_it_starts(daemons, noop_type):
    declared = {"declared": {"task": noop_type.identifier, "every": 1, "priority": 3}}
    proc = daemons.start("-n", "1", "--pool", "threads", settings={"SCHEDULES": declared})
    wait_until(lambda: runs_by_slot("declared"), what="a run of the declared schedule")
    schedule = Schedule.objects.get(name="declared")
    assert (schedule.source, schedule.every, schedule.options) == ("settings", 1, {"priority": 3})
    assert TaskInstance.objects.filter(identifier__startswith="declared@", priority=3).exists()
    assert proc.poll() is None


def test_a_bad_declared_schedule_stops_the_daemon_at_start(daemons, noop_type):
    declared = {"broken": {"task": noop_type.identifier, "cron": "@daily", "timezone": "Nowhere"}}
    proc = daemons.start("-n", "1", "--pool", "threads", settings={"SCHEDULES": declared})
    assert proc.wait(timeout=120) != 0
    assert "ATP[\"SCHEDULES\"]['broken']: timezone 'Nowhere'" in daemons.output(proc)
    assert not Schedule.objects.exists()
