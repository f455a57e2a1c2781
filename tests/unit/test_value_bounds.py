"""Every number and moment the tracker and control accept is bounded (issue 15, points 4 and 8).

Values past the bounds used to be stored and then crash whoever read them: OverflowError in
the sweeps (every daemon, at every start), DataError at enqueue, a row no page could list.
Now the API refuses them with InvalidInput naming the field, and the schema's CHECK
constraints refuse them from any other writer.
"""

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone as django_timezone

from atp import control, tracker, validation
from atp.exceptions import InvalidInput, QueueFull
from atp.models import TaskInstance, TaskType
from atp.tracker.retries import backoff_delay
from tests.support.factories import TaskTypeFactory

pytestmark = pytest.mark.django_db

HANDLER = "tests.support.handlers.noop"
TEN_YEARS = validation.MAX_SECONDS
#: The far-future eta of the report: year 10000 once converted to UTC.
FAR_ETA = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-12)))


# --- task types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, field",
    [
        ({"timeout": 1e11}, "timeout"),
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": 10**400}, "timeout"),
        ({"timeret": 1e11}, "timeret"),
        ({"timeret": math.nan}, "timeret"),
        ({"maxrestart": 2**31}, "maxrestart"),
        ({"retry_backoff": 1e12}, "retry_backoff"),
        ({"retry_backoff": -1}, "retry_backoff"),
        ({"retry_backoff_max": math.inf}, "retry_backoff_max"),
        ({"soft_time_limit": 1e11}, "soft_time_limit"),
        ({"hard_time_limit": math.nan}, "hard_time_limit"),
        ({"priority": 2**31}, "priority"),
        ({"priority": -(2**31) - 1}, "priority"),
        ({"max_queue_size": 2**31}, "max_queue_size"),
        ({"max_retries": 2**40}, "max_retries"),
        ({"rate_limit": "99999999999999999999/s"}, "rate_limit"),
        ({"rate_limit": "²/s"}, "rate_limit"),
    ],
)
def test_register_task_type_refuses_numbers_past_their_bounds(arguments, field):
    with pytest.raises(InvalidInput, match=field):
        tracker.register_task_type("t.bounds", HANDLER, **arguments)
    assert not TaskType.objects.filter(identifier="t.bounds").exists()


def test_the_bounds_themselves_are_accepted_and_the_sweeps_run_with_them():
    tracker.register_task_type(
        "t.edge",
        HANDLER,
        timeout=TEN_YEARS,
        timeret=TEN_YEARS,
        maxrestart=validation.MAX_COUNT,
        priority=validation.PRIORITY_MAX,
        max_queue_size=validation.MAX_COUNT,
        max_retries=validation.MAX_COUNT,
        retry_backoff=TEN_YEARS,
        retry_backoff_max=TEN_YEARS,
        soft_time_limit=TEN_YEARS - 1,
        hard_time_limit=TEN_YEARS,
        rate_limit=f"{validation.MAX_RATE}/s",
    )
    tracker.enqueue_task("t.edge", "a", countdown=TEN_YEARS, expires=TEN_YEARS)
    # The sweeps subtract each type's timeout and retention from now: with 1e11 they raised
    # OverflowError in every daemon.
    tracker.reenqueue_zombie_tasks()
    tracker.delete_retired_tasks()


def test_update_task_type_and_control_refuse_the_same_values(task_type):
    with pytest.raises(InvalidInput, match="retry_backoff"):
        tracker.update_task_type(task_type.identifier, retry_backoff=1e12)
    with pytest.raises(InvalidInput, match="soft"):
        control.set_timeouts(task_type.identifier, soft=1e11)
    with pytest.raises(InvalidInput, match="hard"):
        control.set_timeouts(task_type.identifier, hard=math.nan)
    with pytest.raises(InvalidInput, match="rate_limit"):
        control.rate_limit(task_type.identifier, "99999999999999999999/s")
    with pytest.raises(InvalidInput, match="rate_limit"):
        control.rate_limit(task_type.identifier, "99999999999999999999")
    task_type.refresh_from_db()
    assert (task_type.retry_backoff, task_type.soft_time_limit, task_type.rate_limit) == (
        0,
        None,
        "",
    )


def test_a_retry_long_after_the_float_range_still_gets_a_capped_delay():
    # 2**retries as an int does not convert to a float past 1023: the runner crashed there.
    assert 0 <= backoff_delay(TEN_YEARS, 5000, TEN_YEARS) <= TEN_YEARS
    assert 0 <= backoff_delay(1e-300, validation.MAX_COUNT, 10.0) <= 10.0


# --- enqueue options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, field",
    [
        ({"countdown": 1e12}, "countdown"),
        ({"countdown": math.nan}, "countdown"),
        ({"expires": 1e12}, "expires"),
        ({"expires": -1e12}, "expires"),
        ({"expires": timedelta(days=10**6)}, "expires"),
        ({"eta": FAR_ETA}, "run_after"),
        ({"run_after": datetime(1, 1, 1, tzinfo=UTC)}, "run_after"),
        ({"expires": datetime(9999, 12, 31, tzinfo=UTC)}, "expires"),
        ({"priority": 2**31}, "priority"),
        ({"priority": 2**63}, "priority"),
    ],
)
def test_enqueue_refuses_moments_and_numbers_past_their_bounds(task_type, options, field):
    with pytest.raises(InvalidInput, match=field):
        tracker.enqueue_task(task_type.identifier, "far", **options)
    with pytest.raises(InvalidInput, match=field):
        control.async_apply(task_type.identifier, identifier="far", **options)
    assert not TaskInstance.objects.exists()


@pytest.mark.parametrize(
    "value",
    [
        "nul \x00 here",
        {"key": "nul\x00"},
        {"nul\x00key": 1},
        ["fine", ["deeper", {"k": "\ud800"}]],
        "lone \udfff surrogate",
    ],
)
def test_enqueue_refuses_input_the_databases_cannot_store(task_type, value):
    # PostgreSQL raised a raw DataError (NUL) or UnicodeEncodeError (surrogate); SQLite
    # stored them. Both now refuse them the same way, before writing anything.
    with pytest.raises(InvalidInput, match="NUL character or a lone surrogate"):
        tracker.enqueue_task(task_type.identifier, "nul", value)
    with pytest.raises(InvalidInput, match="NUL character or a lone surrogate"):
        tracker.enqueue_tasks(task_type.identifier, [("ok", {}), ("nul", value)])
    assert not TaskInstance.objects.exists()


def test_strings_that_only_look_like_escapes_are_stored(task_type):
    value = {"text": "\\u0000 and \\ud800 are six characters each", "emoji": "\U0001f600"}
    task_id = tracker.enqueue_task(task_type.identifier, "escapes", value)
    assert TaskInstance.objects.get(pk=task_id).input == value


@pytest.mark.parametrize(
    "identifier, options",
    [("nul\x00", {}), ("\ud800", {}), ("ok", {"queue": "q\x00"})],
)
def test_enqueue_refuses_identifiers_and_queues_with_nul_or_surrogates(
    task_type, identifier, options
):
    with pytest.raises(InvalidInput, match="NUL"):
        tracker.enqueue_task(task_type.identifier, identifier, **options)
    assert not TaskInstance.objects.exists()


def test_queue_full_says_how_many_tasks_really_wait(task_type, settings):
    # Re-enqueued tasks ignore the limit, so a queue can hold more than it: the message
    # counted only up to the limit ("holds 2" with 5 waiting).
    settings.ATP = {"MAX_QUEUE_SIZE": 2}
    tracker.enqueue_tasks(
        task_type.identifier, [(f"t{n}", None) for n in range(5)], check_limit=False
    )
    with pytest.raises(QueueFull, match=r"holds 5 waiting task\(s\), its limit is 2"):
        tracker.enqueue_task(task_type.identifier, "one-more")


# --- the schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("timeout", 1e11),
        ("timeout", math.inf),
        ("timeret", 1e11),
        ("timeret", 0.0),
        ("retry_backoff", 1e12),
        ("retry_backoff_max", -1.0),
        ("soft_time_limit", 1e11),
        ("hard_time_limit", 0.0),
        ("priority", 2**31),
        ("max_queue_size", 2**31),
        ("max_retries", 2**31),
        ("maxrestart", 2**31),
    ],
)
def test_the_schema_refuses_type_values_past_the_bounds(field, value):
    task_type = TaskTypeFactory(identifier="t.schema")
    # A DataError (PostgreSQL's integer range) or an IntegrityError (the CHECK constraint).
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        TaskType.objects.filter(pk=task_type.pk).update(**{field: value})


@pytest.mark.postgres
@pytest.mark.parametrize("field", ["timeout", "timeret", "retry_backoff", "hard_time_limit"])
def test_postgresql_refuses_nan_durations(field):
    # NaN passed PostgreSQL's old CHECK (timeout > 0): NaN sorts above every number there.
    task_type = TaskTypeFactory(identifier="t.nan")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE atp_tasktype SET {field} = 'NaN'::float8 WHERE id = %s",  # noqa: S608
            [task_type.pk],
        )


@pytest.mark.parametrize(
    "changes",
    [
        {"priority": 2**31},
        {"run_after": datetime(9999, 12, 31, tzinfo=UTC)},
        {"expires": datetime(1, 1, 1, tzinfo=UTC)},
    ],
)
def test_the_schema_refuses_task_values_past_the_bounds(enqueue, changes):
    task_id = enqueue("bounded")
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        TaskInstance.objects.filter(pk=task_id).update(**changes)


@pytest.mark.postgres
def test_postgresql_refuses_a_run_after_past_year_9999(enqueue):
    task_id = enqueue("far")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE atp_taskinstance SET run_after = '9999-12-31T23:59-12:00' WHERE id = %s",
            [task_id],
        )


def test_validation_moments_compare_without_converting():
    assert validation.within_range(django_timezone.now(), "t")
    with pytest.raises(InvalidInput, match="out of range"):
        validation.within_range(FAR_ETA, "eta")
