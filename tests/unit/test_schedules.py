"""register/unregister/pause/resume, bad input, ticking, catch-up and the run's event."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone

from atp import schedules, tracker
from atp.daemon.schedules import HORIZON, ScheduleClock
from atp.exceptions import InvalidInput, ScheduleNotFound
from atp.models import LogRecord, Schedule, TaskInstance, Worker
from atp.schedules import ticking

pytestmark = pytest.mark.django_db


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sent_fields(task_id) -> dict:
    return LogRecord.objects.get(instance_id=task_id, event="task-sent").fields


def run_slots(name="tick") -> list[str]:
    found = TaskInstance.objects.filter(identifier__startswith=f"{name}@")
    return sorted(
        identifier.split("@", 1)[1] for identifier in found.values_list("identifier", flat=True)
    )


@pytest.fixture
def alive_daemon(db):
    """A daemon row that has been beating since long ago: every slot is late, none missed."""
    return Worker.objects.create(
        server_id="0xTEST",
        hostname="test",
        pid=1,
        started_at=utc(2000, 1, 1),
        heartbeat_at=utc(2100, 1, 1),  # fresh whatever "now" a test ticks at
    )


def rewind(schedule, moment):
    """Make ``schedule`` look registered at ``moment`` (its slots counted from there)."""
    Schedule.objects.filter(pk=schedule.pk).update(
        checked_until=moment,
        next_slot=schedules.next_runs(schedule.name, count=1, after=moment)[0],
    )


# --- registering --------------------------------------------------------------------------


def test_register_is_an_upsert_by_name(task_type):
    first = schedules.register_schedule("nightly", task_type.identifier, cron="30 2 * * *")
    again = schedules.register_schedule(
        "nightly",
        task_type.identifier,
        cron="@hourly",
        timezone="Europe/Berlin",
        input={"a": 1},
        priority=5,
        expires=60,
    )
    assert again.pk == first.pk and Schedule.objects.count() == 1
    again.refresh_from_db()
    assert (again.cron, again.timezone, again.input) == ("0 * * * *", "Europe/Berlin", {"a": 1})
    assert again.options == {"priority": 5, "expires": 60.0}
    assert again.next_slot == schedules.next_runs("nightly", count=1)[0]


def test_every_takes_seconds_or_a_timedelta(task_type):
    assert (
        schedules.register_schedule("a", task_type.identifier, every=timedelta(minutes=2)).every
        == 120
    )
    assert schedules.register_schedule("b", task_type.identifier, every=1).every == 1


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "@fortnightly"}, "cron"),
        ({}, "give exactly one of cron and every"),
        ({"cron": "@daily", "every": 60}, "give exactly one of cron and every"),
        ({"every": 0.5}, "every"),
        ({"every": 1.5}, "every"),
        ({"every": timedelta(milliseconds=300)}, "every"),
        ({"every": "60"}, "every"),
        ({"every": 60, "timezone": "Europe/Nowhere"}, "timezone"),
        ({"every": 60, "catch_up": "some"}, "catch_up"),
        ({"every": 60, "task_type": "no.such.type"}, "task_type"),
        ({"every": 60, "name": "has@sign"}, "name"),
        ({"every": 60, "name": "x" * 41}, "name"),
        ({"every": 60, "input": {"bad": object()}}, "input"),
        ({"every": 60, "priority": "high"}, "priority"),
        ({"every": 60, "run_after": 5}, r"unknown option\(s\) \['run_after'\]"),
        ({"every": 60, "enabled": "yes"}, "enabled"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(task_type, arguments, field):
    arguments = {"name": "bad", "task_type": task_type.identifier, **arguments}
    with pytest.raises(InvalidInput, match=rf"^{field}"):
        schedules.register_schedule(arguments.pop("name"), arguments.pop("task_type"), **arguments)
    assert not Schedule.objects.exists()


def test_bad_input_leaves_an_existing_schedule_as_it_was(task_type):
    schedules.register_schedule("keep", task_type.identifier, cron="@daily")
    before = Schedule.objects.values().get()
    with pytest.raises(InvalidInput, match="^timezone"):
        schedules.register_schedule("keep", task_type.identifier, cron="@hourly", timezone="Nope")
    assert Schedule.objects.values().get() == before


def test_unregister_pause_resume_of_an_unknown_schedule(task_type):
    assert schedules.unregister_schedule("ghost") is False
    with pytest.raises(ScheduleNotFound):
        schedules.pause_schedule("ghost")
    with pytest.raises(ScheduleNotFound):
        schedules.resume_schedule("ghost")


def test_unregister_keeps_the_runs(task_type, alive_daemon):
    schedule = schedules.register_schedule("gone", task_type.identifier, every=60)
    ticking.fire(schedule.pk, schedule.next_slot)
    assert schedules.unregister_schedule("gone") is True
    assert not Schedule.objects.exists()
    assert run_slots("gone") == [schedule.next_slot.strftime("%Y-%m-%dT%H:%M:%SZ")]


# --- ticking ------------------------------------------------------------------------------


def test_a_tick_enqueues_each_due_slot_once_as_an_ordinary_task(task_type, alive_daemon):
    schedule = schedules.register_schedule(
        "tick", task_type.identifier, every=60, input={"n": 1}, priority=7
    )
    slot = schedule.next_slot
    assert ticking.tick(slot - timedelta(seconds=1)).enqueued == 0
    assert ticking.tick(slot).enqueued == 1
    assert ticking.tick(slot + timedelta(seconds=1)).enqueued == 0  # not twice
    task = TaskInstance.objects.get()
    assert task.identifier == f"tick@{slot:%Y-%m-%dT%H:%M:%SZ}"
    assert (task.input, task.priority, task.type_id) == ({"n": 1}, 7, task_type.pk)
    fields = sent_fields(task.pk)
    assert fields["schedule"] == "tick"
    assert fields["slot"] == f"{slot:%Y-%m-%dT%H:%M:%SZ}"
    assert fields["catch_up"] is False
    schedule.refresh_from_db()
    assert schedule.last_task_id == task.pk
    assert schedule.next_slot == slot + timedelta(seconds=60)


def test_a_slot_another_daemon_enqueued_is_skipped_quietly(task_type, alive_daemon):
    schedule = schedules.register_schedule("tick", task_type.identifier, every=60)
    slot = schedule.next_slot
    existing = tracker.enqueue_task(task_type.identifier, f"tick@{slot:%Y-%m-%dT%H:%M:%SZ}")
    assert ticking.tick(slot).enqueued == 0
    assert list(TaskInstance.objects.values_list("pk", flat=True)) == [existing]
    schedule.refresh_from_db()
    assert schedule.next_slot > slot and schedule.last_task_id == existing


def test_the_tick_reports_the_next_slot_within_its_horizon(task_type, alive_daemon):
    schedule = schedules.register_schedule("tick", task_type.identifier, every=60)
    slot = schedule.next_slot
    assert ticking.tick(slot - timedelta(seconds=0.3), horizon=0.5).next_due == slot
    assert ticking.tick(slot - timedelta(seconds=2), horizon=0.5).next_due is None


def test_late_slots_run_while_a_daemon_lived(task_type, alive_daemon):
    # A daemon ran all along but nobody ticked for 5 slots (a stall): none is lost.
    schedule = schedules.register_schedule("tick", task_type.identifier, every=10, catch_up="skip")
    start = schedule.checked_until
    later = start + timedelta(seconds=50)
    assert ticking.tick(later).enqueued == 5
    assert all(
        sent_fields(pk)["catch_up"] is False
        for pk in TaskInstance.objects.values_list("pk", flat=True)
    )


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        ("one", ["00:01:40"]),
        ("all", [f"00:{s // 60:02}:{s % 60:02}" for s in range(10, 101, 10)]),
        ("skip", []),
    ],
)
def test_slots_no_daemon_saw_run_by_catch_up(task_type, catch_up, expected):
    schedule = schedules.register_schedule(
        "tick", task_type.identifier, every=10, catch_up=catch_up
    )
    start = utc(2026, 1, 1, 0, 0, 5)
    rewind(schedule, start)
    # A daemon stopped at the start; none ran for 100 s (slots 00:00:10 … 00:01:40);
    # then one started and ticked 5 s later, with slot 00:01:50 due.
    Worker.objects.create(
        server_id="0xOLD",
        hostname="h",
        pid=1,
        started_at=utc(2025, 1, 1),
        heartbeat_at=start,
        stopped_at=start,
    )
    restart = start + timedelta(seconds=100)
    Worker.objects.create(
        server_id="0xNEW", hostname="h", pid=2, started_at=restart, heartbeat_at=restart
    )
    ticking.tick(restart + timedelta(seconds=5))
    caught_up = sorted(
        task.identifier[len("tick@2026-01-01T") : -1]
        for task in TaskInstance.objects.all()
        if sent_fields(task.pk)["catch_up"]
    )
    assert caught_up == expected
    on_time = [s for s in run_slots() if s[len("2026-01-01T") : -1] not in caught_up]
    assert on_time == ["2026-01-01T00:01:50Z"]


@override_settings(ATP={"SCHEDULE_CATCH_UP_MAX": 3})
def test_catch_up_all_is_capped(task_type):
    schedule = schedules.register_schedule("tick", task_type.identifier, every=1, catch_up="all")
    ticking.tick(schedule.checked_until + timedelta(seconds=100))
    assert TaskInstance.objects.count() == 3


def test_paused_schedules_do_not_tick_and_resume_catches_up(task_type, alive_daemon):
    schedule = schedules.register_schedule("tick", task_type.identifier, every=1, catch_up="all")
    schedules.pause_schedule("tick")
    assert ticking.tick(schedule.next_slot + timedelta(seconds=5)).enqueued == 0
    paused_at = timezone.now() - timedelta(seconds=4, milliseconds=500)
    Schedule.objects.filter(pk=schedule.pk).update(checked_until=paused_at)
    schedules.resume_schedule("tick")
    resumed = Schedule.objects.get()
    # Every whole second in (paused_at, resumed] was missed while paused: all of them run.
    expected = int(resumed.checked_until.timestamp()) - int(paused_at.timestamp())
    assert len(run_slots()) == expected >= 4
    pks = TaskInstance.objects.values_list("pk", flat=True)
    assert all(sent_fields(pk)["catch_up"] for pk in pks)
    assert resumed.enabled and resumed.next_slot > resumed.checked_until


def test_resume_with_skip_runs_nothing_missed(task_type):
    schedule = schedules.register_schedule("tick", task_type.identifier, every=1, catch_up="skip")
    schedules.pause_schedule("tick")
    Schedule.objects.filter(pk=schedule.pk).update(
        checked_until=timezone.now() - timedelta(seconds=30)
    )
    schedules.resume_schedule("tick")
    assert not TaskInstance.objects.exists()


def test_run_now_enqueues_an_extra_run_with_its_own_identifier(task_type):
    schedules.register_schedule("tick", task_type.identifier, cron="@yearly")
    first, second = schedules.run_now("tick"), schedules.run_now("tick")
    identifiers = set(TaskInstance.objects.values_list("identifier", flat=True))
    assert len(identifiers) == 2 and all(i.startswith("tick@now-") for i in identifiers)
    assert sent_fields(second)["schedule"] == "tick" and sent_fields(second)["slot"] is None
    assert Schedule.objects.get().last_task_id == second != first


def test_changing_the_timing_starts_the_slots_anew(task_type):
    schedule = schedules.register_schedule("tick", task_type.identifier, every=60)
    Schedule.objects.filter(pk=schedule.pk).update(checked_until=utc(2020, 1, 1))
    schedules.register_schedule("tick", task_type.identifier, every=60, input={"x": 1})
    assert Schedule.objects.get().checked_until == utc(2020, 1, 1)  # same timing: kept
    schedules.register_schedule("tick", task_type.identifier, every=30)
    assert Schedule.objects.get().checked_until > utc(2020, 1, 2)


# --- declared in settings -----------------------------------------------------------------


def test_sync_creates_updates_and_removes_only_setting_born_schedules(task_type):
    schedules.register_schedule("in-code", task_type.identifier, every=60)
    declared = {
        "nightly": {
            "task": task_type.identifier,
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "input": {"r": 1},
            "priority": 3,
        },
        "often": {"task": task_type.identifier, "every": 5, "catch_up": "skip"},
    }
    with override_settings(ATP={"SCHEDULES": declared}):
        assert schedules.sync_declared_schedules() == (["nightly", "often"], [])
    nightly = Schedule.objects.get(name="nightly")
    assert (nightly.source, nightly.cron, nightly.timezone, nightly.options) == (
        "settings",
        "30 2 * * *",
        "Europe/Berlin",
        {"priority": 3},
    )
    schedules.pause_schedule("nightly")
    declared = {"nightly": {**declared["nightly"], "cron": "0 3 * * *"}}
    with override_settings(ATP={"SCHEDULES": declared}):
        assert schedules.sync_declared_schedules() == (["nightly"], ["often"])
    nightly.refresh_from_db()
    assert nightly.cron == "0 3 * * *" and nightly.enabled is False  # the pause survives
    assert sorted(Schedule.objects.values_list("name", flat=True)) == ["in-code", "nightly"]


def test_a_bad_declared_schedule_stops_the_sync_before_anything_is_written(task_type):
    declared = {
        "good": {"task": task_type.identifier, "every": 5},
        "bad": {"task": task_type.identifier, "cron": "@daily", "timezone": "Nowhere/Land"},
    }
    with override_settings(ATP={"SCHEDULES": declared}):
        with pytest.raises(ImproperlyConfigured, match=r"\['bad'\]: timezone"):
            schedules.sync_declared_schedules()
    assert not Schedule.objects.exists()


def test_the_daemon_clock_wakes_for_the_next_slot_or_after_its_horizon(task_type, alive_daemon):
    clock = ScheduleClock()
    before = time.monotonic()
    assert clock.tick() == 0
    assert before + HORIZON <= clock.due_at <= time.monotonic() + HORIZON  # nothing scheduled
    schedule = schedules.register_schedule("tick", task_type.identifier, every=3600)
    soon = timezone.now() + timedelta(seconds=0.2)
    Schedule.objects.filter(pk=schedule.pk).update(next_slot=soon)
    clock.tick()
    # Woken for the slot (0.2 s away), not after the full horizon.
    assert clock.due_at < time.monotonic() + 0.25
