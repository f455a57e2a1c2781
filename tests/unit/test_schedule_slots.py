"""next_runs across the 2026 DST changes, aliases, intervals on the epoch, bad input."""

from datetime import UTC, datetime, timedelta

import pytest

from atp import schedules
from atp.exceptions import InvalidInput


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def runs(cron, zone, after, count=5):
    return schedules.next_runs(cron, count=count, timezone=zone, after=after)


# --- Europe/Berlin: 29 March 2026 02:00 CET → 03:00 CEST; 25 October 03:00 CEST → 02:00 CET


def test_berlin_spring_forward_a_skipped_time_runs_once_at_the_jump():
    # 02:30 does not exist on 29 March: the run is at 03:00 CEST (01:00 UTC), once.
    assert runs("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), count=3) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST, the first valid instant after 02:30
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_berlin_spring_forward_every_skipped_time_merges_into_one_slot():
    # */20 in the skipped hour (02:00, 02:20, 02:40) and 03:00 all fall on 01:00 UTC.
    assert runs("*/20 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 30), count=4) == [
        utc(2026, 3, 29, 0, 40),  # 01:40 CET
        utc(2026, 3, 29, 1, 0),  # 02:00, 02:20, 02:40 and 03:00 CEST
        utc(2026, 3, 29, 1, 20),  # 03:20 CEST
        utc(2026, 3, 29, 1, 40),
    ]


def test_berlin_fall_back_a_repeated_time_runs_once_at_its_first_occurrence():
    assert runs("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), count=3) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, not again at 02:30 CET (01:30 UTC)
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
        utc(2026, 10, 27, 1, 30),
    ]


def test_berlin_fall_back_the_repeated_hour_of_an_interval_cron_runs_once():
    assert runs("*/30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 15)) == [
        utc(2026, 10, 24, 23, 30),  # 01:30 CEST
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST; 02:00 and 02:30 CET do not run again
        utc(2026, 10, 25, 2, 0),  # 03:00 CET
        utc(2026, 10, 25, 2, 30),
    ]


def test_berlin_asked_from_inside_the_repeated_hour_skips_its_second_pass():
    # 01:10 UTC is 02:10 CET, the second pass: 02:15 … 02:45 already ran in the first.
    assert runs("*/15 * * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 10), count=2) == [
        utc(2026, 10, 25, 2, 0),  # 03:00 CET
        utc(2026, 10, 25, 2, 15),
    ]


# --- America/New_York: 8 March 2026 02:00 EST → 03:00 EDT; 1 November 02:00 EDT → 01:00 EST


def test_new_york_spring_forward():
    assert runs("30 2 * * *", "America/New_York", utc(2026, 3, 6, 12), count=3) == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT: 02:30 does not exist
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]


def test_new_york_spring_forward_hourly():
    assert runs("@hourly", "America/New_York", utc(2026, 3, 8, 5, 30), count=4) == [
        utc(2026, 3, 8, 6, 0),  # 01:00 EST
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT (02:00 does not exist and merges into it)
        utc(2026, 3, 8, 8, 0),  # 04:00 EDT
        utc(2026, 3, 8, 9, 0),
    ]


def test_new_york_fall_back():
    assert runs("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), count=3) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, not again at 01:30 EST (06:30 UTC)
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
        utc(2026, 11, 3, 6, 30),
    ]


def test_new_york_fall_back_hourly_skips_the_repeated_hour():
    assert runs("0 * * * *", "America/New_York", utc(2026, 11, 1, 4, 30), count=3) == [
        utc(2026, 11, 1, 5, 0),  # 01:00 EDT
        utc(2026, 11, 1, 7, 0),  # 02:00 EST; 01:00 EST (06:00 UTC) is the repeat
        utc(2026, 11, 1, 8, 0),
    ]


# --- other forms


def test_aliases_and_plain_utc():
    assert runs("@daily", "UTC", utc(2026, 1, 1, 12), count=2) == [utc(2026, 1, 2), utc(2026, 1, 3)]
    assert runs("@weekly", "UTC", utc(2026, 1, 1), count=1) == [utc(2026, 1, 4)]  # a Sunday
    assert runs("@monthly", "UTC", utc(2026, 1, 15), count=1) == [utc(2026, 2, 1)]
    assert runs("@yearly", "UTC", utc(2026, 1, 15), count=1) == [utc(2027, 1, 1)]


def test_after_is_exclusive_and_results_are_aware_utc():
    found = runs("0 12 * * *", "Europe/Berlin", utc(2026, 6, 1, 10), count=2)
    assert found == [utc(2026, 6, 2, 10), utc(2026, 6, 3, 10)]
    assert all(moment.utcoffset() == timedelta(0) for moment in found)


@pytest.mark.django_db
def test_next_runs_of_an_interval_schedule_are_whole_multiples_since_the_epoch(task_type):
    schedules.register_schedule("every-90", task_type.identifier, every=90)
    after = utc(2026, 1, 1, 0, 0, 1)
    found = schedules.next_runs("every-90", count=3, after=after)
    assert [moment.timestamp() % 90 for moment in found] == [0, 0, 0]
    assert found[0] - after < timedelta(seconds=90) and found[0] > after
    assert [b - a for a, b in zip(found, found[1:], strict=False)] == [timedelta(seconds=90)] * 2


@pytest.mark.django_db
def test_next_runs_of_a_cron_schedule_use_its_time_zone(task_type):
    schedules.register_schedule(
        "berlin", task_type.identifier, cron="30 2 * * *", timezone="Europe/Berlin"
    )
    assert schedules.next_runs("berlin", count=1, after=utc(2026, 3, 28, 12)) == [
        utc(2026, 3, 29, 1, 0)
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"cron_or_name": "61 * * * *"}, "cron"),
        ({"cron_or_name": "* * *"}, "cron"),
        ({"cron_or_name": "no-such-schedule"}, "cron_or_name"),
        ({"cron_or_name": "@daily", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron_or_name": "@daily", "after": datetime(2026, 1, 1)}, "after"),
        ({"cron_or_name": "@daily", "count": -1}, "count"),
    ],
)
def test_next_runs_refuses_bad_input_naming_the_field(arguments, field):
    with pytest.raises(InvalidInput, match=rf"^{field}\b"):
        schedules.next_runs(**arguments)
