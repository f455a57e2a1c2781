"""The query benchmark's fill and measure steps, at a tiny size (so they keep working)."""

import pytest

from atp import query
from atp.bench import query as bench_query
from atp.models import LogRecord, Status, TaskInstance

pytestmark = pytest.mark.django_db


def test_fill_adds_only_the_missing_tasks_with_their_log_records():
    assert bench_query.fill(30, batch=20) == 30
    assert bench_query.fill(45, batch=20) == 15
    assert bench_query.fill(45) == 0
    tasks = TaskInstance.objects.filter(type__identifier__in=bench_query.TYPES)
    assert tasks.count() == 45
    assert tasks.values("identifier").distinct().count() == 45
    assert {Status.FINISHED, Status.FAILED, Status.ACCEPTED} <= set(
        tasks.values_list("status", flat=True)
    )
    assert LogRecord.objects.filter(event="task-sent").count() == 45
    # The generated rows read back like the tracker's.
    finished = query.as_dict(tasks.filter(status=Status.FINISHED).first())
    assert finished["result"].startswith("{'pixels'") and finished["runtime"] > 0
    assert finished["kwargs"].startswith("{'path': '/data/scene-") or finished["args"] != "()"
    assert query.iter_tasks(search="job-00000007").__next__().identifier == "job-00000007"


def test_measure_reports_p50_and_p99_per_case():
    bench_query.fill(40)
    results = bench_query.measure(40, repeat=3, warmup=1)
    assert set(results) == {
        "state+type, sorted by received, first 100",
        "search by identifier",
        "free-text search (10 matches)",
        "get_task_by_id",
    }
    assert all(0 < p50 <= p99 for p50, p99 in results.values())
