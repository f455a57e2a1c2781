"""The drain benchmark's parts that need no daemon: filler, reset, steady rate, table, CLI."""

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError

from atp import tracker
from atp.bench import claim, history
from atp.bench import throughput as bench
from atp.models import LogRecord, Status, TaskInstance

pytestmark = pytest.mark.django_db


def test_steady_rate_leaves_out_the_first_finishes():
    # 100 finishes: the first 5 (the warm-up) spread over 10 s, then one every 0.1 s.
    finishes = [2.0 * n for n in range(5)] + [8.0 + 0.1 * n for n in range(1, 96)]
    assert bench.steady_rate(finishes) == pytest.approx(95 / 9.5)
    assert bench.steady_rate([1.0, 3.0]) == pytest.approx(0.5)  # k is at least 1
    assert bench.steady_rate([1.0]) is None
    assert bench.steady_rate([2.0, 2.0, 2.0]) is None  # one instant: no rate to tell


def test_filler_waits_behind_the_measured_tasks_and_is_topped_up():
    bench.setup()
    assert bench.fill_backlog(30) == 30
    bench.fill(3)
    assert bench.fill_backlog(50) == 20  # the missing ones only
    assert bench.fill_backlog(50) == 0
    filler = TaskInstance.objects.filter(type__identifier=bench.FILLER)
    assert filler.count() == 50
    assert filler.values("identifier").distinct().count() == 50
    assert filler.values("uuid").distinct().count() == 50
    assert set(filler.values_list("status", flat=True)) == {Status.ACCEPTED}
    assert not LogRecord.objects.filter(instance__in=filler).exists()  # no logs by design
    # Due and claimable, but the claim takes the measured tasks first.
    assert TaskInstance.objects.ready().count() == 53
    first = [TaskInstance.objects.get(pk=pk) for pk in tracker.dequeue_task("s", limit=3)]
    assert {task.type.identifier for task in first} == {bench.MEASURED}
    assert tracker.dequeue_task("s")[0] in set(filler.values_list("pk", flat=True))
    assert str(filler.first().uuid)  # the raw rows read back through the ORM
    assert bench.fill_backlog(10) == 10  # a smaller backlog: deleted and inserted again
    assert filler.filter(status=Status.ACCEPTED).count() == 10


def test_reset_deletes_bench_tasks_with_their_logs_and_responses_only():
    bench.setup()
    tracker.register_task_type("other.noop", "tests.support.handlers.noop")
    kept = tracker.enqueue_task("other.noop", "kept")
    bench.fill(4)
    bench.fill_backlog(5)
    stamped = tracker.enqueue_task(bench.STAMP)
    tracker.set_task_response(stamped, "1.0", "text/plain")
    bench.reset()
    assert list(TaskInstance.objects.values_list("pk", flat=True)) == [kept]
    assert set(LogRecord.objects.values_list("instance_id", flat=True)) == {kept}


def test_the_filler_is_removed_even_across_a_lost_connection(monkeypatch):
    bench.setup()
    bench.fill_backlog(5)
    reset, calls = bench.reset, []

    def reset_after_an_outage(types):
        calls.append(types)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        reset(types)

    monkeypatch.setattr(bench, "reset", reset_after_an_outage)
    monkeypatch.setattr(bench, "settle", lambda: None)  # VACUUM needs autocommit
    monkeypatch.setattr(bench, "drop_all", lambda: None)  # keep the test's transaction
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    assert bench.remove_filler() >= 0
    assert calls == [[bench.FILLER], [bench.FILLER]]
    assert not TaskInstance.objects.filter(type__identifier=bench.FILLER).exists()


def test_setup_refuses_when_other_tasks_are_due():
    tracker.register_task_type("other.noop", "tests.support.handlers.noop")
    tracker.enqueue_task("other.noop", "waiting")
    with pytest.raises(RuntimeError, match="1 task\\(s\\) of other types"):
        bench.setup()


def test_table_has_a_row_per_figure_and_marks_missing_ones():
    drain = {
        "tasks": 20,
        "wall_s": 1.5,
        "wall_per_s": 13.3,
        "steady_per_s": 40.0,
        "startup_s": 1.0,
        "exit_s": 1.6,
        "commits_per_task": None,
    }
    report = {
        "enqueue": {
            "one_by_one_tasks": 4,
            "one_by_one_per_s": 100.0,
            "bulk_tasks": 40,
            "bulk_per_s": 900.0,
        },
        "drain": {"threads -n 4": drain},
        "latency": {"tasks": 5, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0},
        "backlog": {
            "daemon": "processes -n 2",
            "by_backlog": {"10": {**drain, "ratio": 1.0, "filler_claimed": 0}},
        },
    }
    rows = bench.table(report)
    assert all(len(row) == 5 and all(isinstance(cell, str) for cell in row) for row in rows)
    assert [row[0] for row in rows].count("drain") == 5
    assert [row[0] for row in rows].count("backlog") == 7
    assert ("drain", "threads -n 4, 20 tasks", "commits", "n/a", "per task") in rows
    assert bench.table({"backlog": {"skipped": "no filler insert"}})[0][1] == "skipped"


@pytest.mark.parametrize(
    "option",
    [
        ["--drain", "forks:2"],
        ["--drain", "threads:0"],
        ["--sections", "speed"],
        ["--backlog", "10,-1"],
    ],
)
def test_atp_bench_rejects_bad_options(option):
    with pytest.raises(CommandError):
        call_command("atp_bench", *option)


def test_the_claim_section_has_a_row_per_figure():
    figures = {
        "claims": 10,
        "waiting": 100,
        "batch": 5,
        "current_client_ms": 2.0,
        "baseline_client_ms": 1.9,
        "current_server_ms": 1.0,
        "baseline_server_ms": 1.0,
        "client_ratio": 2.0 / 1.9,
        "server_ratio": 1.0,
    }
    rows = [row for row in bench.table({"claim": figures}) if row[0] == "claim"]
    assert [row[2] for row in rows] == [
        "client, current",
        "client, baseline",
        "client ratio",
        "server, current",
        "server, baseline",
        "server ratio",
    ]
    assert rows[2][1] == "5 of 100 waiting, 10 claims each" and rows[2][3] == "1.053"
    skipped = bench.table({"claim": {"skipped": "PostgreSQL only"}})
    assert skipped == [("claim", "skipped", "PostgreSQL only", "", "")]


@pytest.mark.parametrize(
    "option",
    [["--claims", "0"], ["--claim-batch", "0"], ["--claim-waiting", "10", "--claim-batch", "11"]],
)
def test_atp_bench_rejects_bad_claim_options(option):
    with pytest.raises(CommandError, match="--claim"):
        call_command("atp_bench", "--sections", "claim", *option)


@pytest.mark.postgres
def test_the_claim_section_times_both_statements_on_the_same_tasks():
    """Small numbers (the real run is the lead's, on a quiet machine): every claim of both
    statements takes a full batch, and every claim is rolled back."""
    bench.setup()
    bench.fill(7)  # the section's own tasks replace these
    before = LogRecord.objects.count()
    figures = claim.measure(
        4, 40, 8, lambda: bench.reset([bench.MEASURED]), bench.fill, settle=lambda: None
    )
    assert (figures["claims"], figures["waiting"], figures["batch"]) == (4, 40, 8)
    for kind in ("client", "server"):
        for name in ("current", "baseline"):
            assert figures[f"{name}_{kind}_ms"] > 0
        ratio = figures[f"current_{kind}_ms"] / figures[f"baseline_{kind}_ms"]
        assert figures[f"{kind}_ratio"] == pytest.approx(ratio)
    assert not TaskInstance.objects.filter(type__identifier=bench.MEASURED).exists()
    assert LogRecord.objects.count() == before - 7  # the fill's records went with reset


def test_the_baseline_is_the_claim_before_flow_control_and_differs_from_the_current():
    statements = claim.statements()
    assert "concurrency_limit" not in statements["baseline"]
    assert "paused" not in statements["baseline"]
    assert "AND tt.concurrency_limit IS NULL" in statements["current"]
    assert "NOT tt.paused" in statements["current"]


def test_the_cleanup_section_has_a_row_per_figure():
    figures = {
        "tasks": 1000,
        "batch": 500,
        "seconds": 0.5,
        "deleted_per_s": 2000.0,
        "deleted_by_atp_cleanup": 900,
        "claims_during": 20,
        "claim_p50_before_ms": 1.5,
        "claim_p99_before_ms": 3.0,
        "claim_p50_during_ms": 2.0,
        "claim_p99_during_ms": None,
    }
    rows = [row for row in bench.table({"cleanup": figures}) if row[0] == "cleanup"]
    assert [(row[2], row[3]) for row in rows] == [
        ("deleted", "2,000"),
        ("sweep time", "0.5"),
        ("claim p50 before", "1.5"),
        ("claim p99 before", "3.0"),
        ("claim p50 during", "2.0"),
        ("claim p99 during", "n/a"),
    ]
    assert rows[0][1] == "1,000 retired, batches of 500"
    skipped = bench.table({"cleanup": {"skipped": "PostgreSQL only"}})
    assert skipped == [("cleanup", "skipped", "PostgreSQL only", "", "")]


@pytest.mark.postgres
def test_the_history_is_ended_tasks_in_enqueue_order_with_their_log_records(monkeypatch):
    monkeypatch.setattr(history, "BATCH", 4)  # several batches
    other = tracker.register_task_type("other.noop", "tests.support.handlers.noop")
    kept = tracker.enqueue_task(other.identifier, "kept")
    history.fill_history(10, vacuum=False)
    history.fill_history(9, vacuum=False)  # replaces the first
    tasks = TaskInstance.objects.filter(type__identifier__in=history.TYPES).order_by("pk")
    assert tasks.count() == 9
    assert {task.status for task in tasks} == {Status.FINISHED}
    enqueued = [task.enqueued_at for task in tasks]
    assert enqueued == sorted(enqueued) and len(set(enqueued)) == 9
    assert all(task.finished_at > task.enqueued_at for task in tasks)
    events = LogRecord.objects.filter(instance__in=tasks).values_list("event", flat=True)
    assert sorted(events) == ["task-received"] * 9 + ["task-sent"] * 9 + ["task-succeeded"] * 9
    assert TaskInstance.objects.filter(pk=kept).exists()
