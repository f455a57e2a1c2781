"""atp.query: every filter, sort key, paging rule and the task dict, on a fixed data set."""

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from atp import query, tracker
from atp.exceptions import InvalidInput
from atp.models import TaskInstance
from tests.unit.query_dataset import T0, build, identifiers, minutes

pytestmark = pytest.mark.django_db

ALL = [
    "resize-1",
    "resize-2",
    "resize-3",
    "thumb-1",
    "thumb-2",
    "mail-1",
    "mail-2",
    "mail-3",
    "mail-4",
    "thumb-3",
]


@pytest.fixture
def tasks():
    return build()


def found(**filters):
    """Identifiers of the tasks iter_tasks yields for ``filters``."""
    return identifiers(query.iter_tasks(**filters))


def found_set(**filters):
    return set(found(**filters))


# --- default order and paging -------------------------------------------------------------


def test_no_filter_returns_every_task_newest_first(tasks):
    assert found() == list(reversed(ALL))


def test_limit_and_offset_page_through_the_sorted_tasks(tasks):
    pages = [found(sort_by="name", limit=4, offset=offset) for offset in (0, 4, 8)]
    assert [len(page) for page in pages] == [4, 4, 2]
    assert sum(pages, []) == found(sort_by="name")


def test_offset_past_the_end_and_limit_zero_give_nothing(tasks):
    assert found(offset=50) == []
    assert found(limit=0) == []
    assert found(limit=3, offset=9) == ["resize-1"]


def test_limit_and_offset_accept_digit_strings(tasks):
    assert found(limit="2", offset="1") == ["mail-4", "mail-3"]


@pytest.mark.parametrize("bad", [{"limit": -1}, {"offset": -2}, {"limit": "x"}, {"offset": 1.5}])
def test_bad_paging_values_are_refused_before_iterating(tasks, bad):
    with pytest.raises(InvalidInput):
        query.iter_tasks(**bad)


def test_without_limit_tasks_are_streamed_not_loaded_at_once(tasks, monkeypatch):
    monkeypatch.setattr(query, "CHUNK_SIZE", 3)
    iterator = query.iter_tasks(sort_by="received")
    assert not isinstance(iterator, list)
    assert len(list(iterator)) == 10


def test_empty_database_gives_no_tasks():
    assert found() == []
    assert found(state="SUCCESS", search="anything", sort_by="-received", limit=10) == []


# --- filters ----------------------------------------------------------------------------


def test_type_filter_is_exact(tasks):
    assert found_set(type="img.resize") == {"resize-1", "resize-2", "resize-3"}
    assert found_set(type="img") == set()
    assert found_set(type="no.such.type") == set()


def test_type_filter_takes_several_names_or_a_task_type(tasks):
    assert found_set(type=["img.resize", "mail.send"]) == {
        "resize-1",
        "resize-2",
        "resize-3",
        "mail-1",
        "mail-2",
        "mail-3",
        "mail-4",
    }
    assert found_set(type=tasks["thumb-1"].type) == {"thumb-1", "thumb-2", "thumb-3"}


def test_worker_filter_matches_server_id_or_registered_host(tasks):
    by_server = found_set(worker="0xAAA")
    assert by_server == {"resize-1", "thumb-1", "mail-4", "thumb-3"}
    assert found_set(worker="node-a") == by_server
    # A daemon that never registered a Worker row is found by its server id.
    assert found_set(worker="0xCCC") == {"thumb-2", "mail-3"}


def test_worker_filter_excludes_tasks_no_daemon_claimed(tasks):
    # Unlike Flower, a task without a worker does not pass a worker filter.
    assert "resize-3" not in found_set(worker="node-b")
    assert found_set(worker="node-b") == {"resize-2", "mail-2"}
    assert found_set(worker="nobody") == set()


@pytest.mark.parametrize(
    "state, expected",
    [
        ("SUCCESS", {"resize-1", "thumb-2", "mail-2", "thumb-3"}),
        ("FINISHED", {"resize-1", "thumb-2", "mail-2", "thumb-3"}),
        ("success", {"resize-1", "thumb-2", "mail-2", "thumb-3"}),
        ("FAILURE", {"resize-2"}),
        ("FAILED", {"resize-2"}),
        ("PENDING", {"resize-3"}),
        ("ACCEPTED", {"resize-3"}),
        ("RECEIVED", {"mail-4"}),
        ("SCHEDULED", {"mail-4"}),
        ("STARTED", {"thumb-1"}),
        ("RUNNING", {"thumb-1"}),
        ("PAUSED", {"mail-3"}),
        ("REVOKED", {"mail-1"}),
        ("WAITING", set()),
        ("RETRY", set()),
    ],
)
def test_state_filter_takes_celery_and_atp_names(tasks, state, expected):
    assert found_set(state=state) == expected


def test_state_filter_takes_several_states(tasks):
    assert found_set(state=["FAILURE", "REVOKED"]) == {"resize-2", "mail-1"}


def test_unknown_state_is_refused_with_the_valid_names(tasks):
    with pytest.raises(InvalidInput, match="SUCCESS"):
        query.iter_tasks(state="DONE")


def test_received_bounds_are_inclusive_and_drop_tasks_never_received(tasks):
    assert found_set(received_start=minutes(5)) == {"mail-2", "mail-3", "mail-4", "thumb-3"}
    assert found_set(received_end=minutes(2)) == {"resize-1", "resize-2"}
    assert found_set(received_start=minutes(2), received_end=minutes(4)) == {
        "resize-2",
        "thumb-1",
        "thumb-2",
    }


def test_time_bounds_accept_flower_text_iso_and_epoch(tasks):
    expected = {"mail-3", "mail-4", "thumb-3"}
    assert found_set(received_start="2024-05-01 12:06") == expected
    assert found_set(received_start="2024-05-01T12:06:00+00:00") == expected
    assert found_set(received_start=minutes(6).timestamp()) == expected


def test_naive_time_bounds_are_in_the_current_time_zone(tasks):
    with timezone.override(ZoneInfo("Europe/Berlin")):  # UTC+2 in May
        assert found_set(received_start="2024-05-01 14:06") == {"mail-3", "mail-4", "thumb-3"}


def test_bad_time_bound_is_refused(tasks):
    with pytest.raises(InvalidInput, match="not a time"):
        query.iter_tasks(received_start="yesterday")
    with pytest.raises(InvalidInput):
        query.iter_tasks(started_end=[2024])


def test_started_bounds(tasks):
    # started = received + 1 s for the tasks that started.
    assert found_set(started_start=minutes(3), started_end=minutes(6, 1)) == {
        "thumb-1",
        "thumb-2",
        "mail-2",
        "mail-3",
    }
    assert "mail-4" not in found_set(started_start=T0)  # claimed, never started


def test_filters_combine_with_and(tasks):
    assert found_set(type="img.resize", state="SUCCESS") == {"resize-1"}
    assert found_set(type="img.thumbnail", worker="node-a", received_end=minutes(3)) == {"thumb-1"}
    assert found_set(state="SUCCESS", search="alpha") == {"resize-1", "thumb-3"}
    assert found_set(type="mail.send", state="FAILURE") == set()


# --- sorting ----------------------------------------------------------------------------


def test_sort_by_received_puts_never_received_tasks_first_then_last(tasks):
    ascending = found(sort_by="received")
    # resize-3 and mail-1 were never received: they sort as the smallest, ties by id.
    assert ascending == [
        "resize-3",
        "mail-1",
        "resize-1",
        "resize-2",
        "thumb-1",
        "thumb-2",
        "mail-2",
        "mail-3",
        "mail-4",
        "thumb-3",
    ]
    assert found(sort_by="-received") == list(reversed(ascending))


def test_sort_by_started(tasks):
    assert found(sort_by="started")[:4] == ["resize-3", "mail-1", "mail-4", "resize-1"]
    assert found(sort_by="-started")[:2] == ["thumb-3", "mail-3"]


def test_sort_by_name_then_id(tasks):
    assert found(sort_by="name") == [
        "resize-1",
        "resize-2",
        "resize-3",
        "thumb-1",
        "thumb-2",
        "thumb-3",
        "mail-1",
        "mail-2",
        "mail-3",
        "mail-4",
    ]
    assert found(sort_by="-name") == list(reversed(found(sort_by="name")))


def test_sort_by_state_sorts_celery_state_names_as_text(tasks):
    states = [query.as_dict(task)["state"] for task in query.iter_tasks(sort_by="state")]
    assert states == sorted(states)
    assert states[0] == "FAILURE" and states[-1] == "SUCCESS"
    assert found(sort_by="-state")[-1] == "resize-2"


def test_sort_by_runtime_puts_tasks_without_runtime_first(tasks):
    ascending = found(sort_by="runtime")
    assert ascending[-5:] == ["mail-2", "thumb-3", "resize-2", "resize-1", "thumb-2"]
    assert found(sort_by="-runtime")[:2] == ["thumb-2", "resize-1"]


def test_sort_by_worker(tasks):
    workers = [task.server_id for task in query.iter_tasks(sort_by="worker")]
    assert workers == sorted(workers) and workers[0] == ""
    assert [task.server_id for task in query.iter_tasks(sort_by="-worker")][0] == "0xCCC"


def test_unknown_sort_key_is_refused(tasks):
    with pytest.raises(InvalidInput, match="sort keys"):
        query.iter_tasks(sort_by="priority")


def test_sort_tasks_orders_a_queryset(tasks):
    ordered = query.sort_tasks(
        TaskInstance.objects.filter(type__identifier="mail.send"), "-received"
    )
    assert identifiers(ordered) == ["mail-4", "mail-3", "mail-2", "mail-1"]


# --- get_task_by_id and as_dict -------------------------------------------------------------


def test_get_task_by_id_is_one_query(tasks, django_assert_num_queries):
    with django_assert_num_queries(1):
        info = query.as_dict(query.get_task_by_id(tasks["resize-1"].pk))
    assert info["children"] == [str(tasks["thumb-3"].uuid)] and info["name"] == "img.resize"


def test_get_task_by_id_accepts_id_digits_and_uuid(tasks):
    task = tasks["resize-2"]
    for key in (task.pk, str(task.pk), task.uuid, str(task.uuid), task):
        assert query.get_task_by_id(key).identifier == "resize-2"


@pytest.mark.parametrize(
    "key", [10**9, "not-a-uuid", "", None, 1.5, "00000000-0000-0000-0000-000000000000"]
)
def test_get_task_by_id_returns_none_for_unknown_tasks(tasks, key):
    assert query.get_task_by_id(key) is None


def test_as_dict_has_flowers_keys_and_atps(tasks):
    info = query.as_dict(query.get_task_by_id(tasks["resize-1"].pk))
    flower_keys = {
        "uuid", "name", "state", "hostname", "worker", "received", "started", "succeeded",
        "failed", "retried", "revoked", "runtime", "args", "kwargs", "result", "exception",
        "traceback", "retries", "eta", "expires", "root_id", "parent_id", "children",
    }  # fmt: skip
    assert flower_keys | {"id", "identifier", "status", "progress"} <= set(info)


def test_as_dict_of_a_finished_task(tasks):
    task = tasks["resize-1"]
    info = query.as_dict(query.get_task_by_id(task.pk))
    assert info["uuid"] == str(task.uuid)
    assert (info["name"], info["state"], info["status"]) == ("img.resize", "SUCCESS", "FINISHED")
    assert (info["id"], info["identifier"]) == (task.pk, "resize-1")
    assert (info["worker"], info["hostname"]) == ("0xAAA", "node-a")
    assert info["received"] == minutes(1).timestamp()
    assert info["started"] == minutes(1, 1).timestamp()
    assert info["succeeded"] == minutes(1, 11).timestamp()
    assert info["failed"] is info["revoked"] is None
    assert info["runtime"] == 10.0
    assert info["args"] == "()"
    assert info["kwargs"] == "{'path': '/data/alpha.tif', 'width': 640}"
    assert info["result"] == "{'size': 1234}"
    assert info["exception"] is info["traceback"] is None
    assert info["root_id"] == str(task.uuid) and info["parent_id"] is None
    assert info["children"] == [str(tasks["thumb-3"].uuid)]


def test_as_dict_of_a_failed_task(tasks):
    info = query.as_dict(tasks["resize-2"])
    assert (info["state"], info["failed"]) == ("FAILURE", minutes(2, 4).timestamp())
    assert info["exception"] == "OSError: disk full"
    assert info["traceback"].endswith("OSError: disk full")
    assert info["result"] is None and info["succeeded"] is None


def test_as_dict_of_a_child_and_of_tasks_not_claimed_or_claimed_by_unknown_daemon(tasks):
    child = query.as_dict(tasks["thumb-3"])
    assert child["parent_id"] == child["root_id"] == str(tasks["resize-1"].uuid)
    assert child["args"] == "('/data/alpha.tif', 32)" and child["kwargs"] == "{}"
    pending = query.as_dict(tasks["resize-3"])
    assert pending["worker"] is pending["hostname"] is pending["received"] is None
    assert pending["state"] == "PENDING" and pending["runtime"] is None
    unregistered = query.as_dict(tasks["thumb-2"])
    assert unregistered["worker"] == unregistered["hostname"] == "0xCCC"
    assert query.as_dict(tasks["mail-4"])["args"] == "('hello world',)"


def test_as_dict_shows_eta_expires_retried_and_revoked(tasks):
    from atp import events
    from tests.support.factories import LogRecordFactory

    task = tasks["mail-1"]
    TaskInstance.objects.filter(pk=task.pk).update(
        run_after=T0 + timedelta(hours=1), expires=T0 + timedelta(hours=2), retries=1
    )
    LogRecordFactory(instance=task, time=minutes(3), status=1, event=events.TASK_RETRIED)
    info = query.as_dict(query.get_task_by_id(task.pk))
    assert info["eta"] == (T0 + timedelta(hours=1)).isoformat()
    assert info["expires"] == (T0 + timedelta(hours=2)).isoformat()
    assert (info["retried"], info["retries"]) == (minutes(3).timestamp(), 1)
    assert info["revoked"] == minutes(9).timestamp() and info["state"] == "REVOKED"
    assert query.as_dict(tasks["resize-1"])["eta"] is None


def test_a_page_costs_the_same_queries_whatever_its_size(tasks, django_assert_num_queries):
    # The page query, plus one resolving the type name: no query per task (as_dict reads
    # only what the page query loaded, children included).
    with django_assert_num_queries(2):
        small = [query.as_dict(task) for task in query.iter_tasks(type="img.resize", limit=1)]
    with django_assert_num_queries(2):
        large = [query.as_dict(task) for task in query.iter_tasks(type="img.resize", limit=100)]
    assert (len(small), len(large)) == (1, 3)


def test_as_dict_shows_the_call_as_enqueued(task_type):
    # PostgreSQL's jsonb reorders keys; the reprs recorded at enqueue keep the caller's order.
    task_id = tracker.enqueue_task("test.noop", "ordered", {"zeta": 1, "alpha": [True, None]})
    info = query.as_dict(query.get_task_by_id(task_id))
    assert (info["args"], info["kwargs"]) == ("()", "{'zeta': 1, 'alpha': [True, None]}")
    assert info["root_id"] == info["uuid"] and info["state"] == "PENDING"
