"""How fast the admin renders on a big task table: fill PostgreSQL fast, time the pages.

Not part of the test suite (it writes a million rows): run it by hand with
``DATABASE_URL=postgres://…/atp_admin manage.py atp_admin_bench --rows 1000000``.
"""

import statistics
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from atp import tracker
from atp.models import Status, TaskInstance, Worker

TYPES = [f"bench.admin.{name}" for name in ("resize", "ingest", "report", "mail", "export")]
USER = "atp-admin-bench"

#: One statement fills the table: statuses by row number (mostly ended, a queue, a few
#: running), end times spread over 30 days so the last hour holds a realistic slice.
FILL_SQL = """
INSERT INTO atp_taskinstance (
    type_id, identifier, uuid, status, input, priority, queue, run_after, server_id,
    attempts, retries, progress, enqueued_at, received_at, started_at, finished_at, updated_at)
SELECT
    (%(type_ids)s)[1 + i %% %(ntypes)s],
    'bench-' || i,
    gen_random_uuid(),
    s.status,
    jsonb_build_object('n', i, 'path', '/data/item-' || i),
    0, 'default', t.enq,
    CASE WHEN s.status IN (1) THEN '' ELSE 'bench-server-' || (i %% 4) END,
    CASE WHEN s.status IN (1) THEN 0 ELSE 1 END, 0,
    CASE WHEN s.status = 3 THEN jsonb_build_object('done', i %% 100, 'total', 100,
         'percent', i %% 100) END,
    t.enq,
    CASE WHEN s.status <> 1 THEN t.enq END,
    CASE WHEN s.status <> 1 THEN t.enq + interval '1 second' END,
    CASE WHEN s.status IN (5, 6, 7) THEN t.enq + interval '3 seconds' END,
    t.enq + interval '3 seconds'
FROM generate_series(%(start)s, %(stop)s) AS i
CROSS JOIN LATERAL (SELECT CASE
    WHEN i %% 1000 = 0 THEN 3
    WHEN i %% 1000 < 10 THEN 1
    WHEN i %% 100 < 88 THEN 5
    WHEN i %% 100 < 96 THEN 6
    ELSE 7 END AS status) AS s
CROSS JOIN LATERAL (SELECT now() - (%(stop)s - i) * interval '2.592 seconds'
                           - interval '4 seconds' AS enq) AS t
"""


def fill(rows: int) -> float:
    """Replace the benchmark's tasks with ``rows`` generated ones; return seconds taken."""
    if connection.vendor != "postgresql":
        raise SystemExit("atp_admin_bench needs PostgreSQL (DATABASE_URL=postgres://…)")
    started = time.perf_counter()
    for identifier in TYPES:
        tracker.register_task_type(
            identifier, "atp.bench.throughput.noop", max_queue_size=100_000_000
        )
    TaskInstance.objects.filter(type__identifier__in=TYPES).delete()
    type_ids = list(
        tracker.TaskType.objects.filter(identifier__in=TYPES).values_list("pk", flat=True)
    )
    batch = 250_000
    with connection.cursor() as cursor:
        for start in range(1, rows + 1, batch):
            stop = min(start + batch - 1, rows)
            cursor.execute(
                FILL_SQL,
                {"type_ids": type_ids, "ntypes": len(type_ids), "start": start, "stop": stop},
            )
    for n in range(4):
        Worker.objects.update_or_create(
            server_id=f"bench-server-{n}", defaults={"hostname": "bench", "pid": 1000 + n}
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE atp_taskinstance")
    return time.perf_counter() - started


def pages() -> dict[str, str]:
    """The admin pages the benchmark times, by name."""
    failed = TaskInstance.objects.filter(status=Status.FAILED).order_by("-pk").first()
    some_type = tracker.TaskType.objects.get(identifier=TYPES[0])
    base = "/admin/atp/taskinstance/"
    return {
        "task list": base,
        "task list, page 100": f"{base}?p=100",
        "task list, failed": f"{base}?status__exact={Status.FAILED}",
        "task list, one type": f"{base}?type__id__exact={some_type.pk}",
        "task list, one server": f"{base}?server=bench-server-1",
        "task list, today": f"{base}?enqueued_at__gte={time.strftime('%Y-%m-%d')}T00:00:00%2B00:00",
        "task list, past 7 days": f"{base}?{_past_days(7)}",
        # Few matches (as "today" just after midnight): the count cannot stop early.
        "task list, last 10 minutes": f"{base}?{_since(timedelta(minutes=10))}",
        "task detail": f"{base}{failed.pk}/change/" if failed else base,
        "dashboard": f"{base}dashboard/",
        "task type list": "/admin/atp/tasktype/",
        "worker list": "/admin/atp/worker/",
        "metrics (Prometheus)": "/atp/metrics",
        "live dashboard JSON": f"{base}live/dashboard.json",
        "live task rows JSON (50 ids)": f"{base}live/tasks.json?ids={_page_ids()}",
        "search: exception text": f"{base}?q=refused",
    }


def _past_days(days: int) -> str:
    """The query string of the admin's "Past 7 days" link (DateFieldListFilter), in UTC."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since, until = today - timedelta(days=days), today + timedelta(days=1)
    return urlencode({"enqueued_at__gte": str(since), "enqueued_at__lt": str(until)})


def _since(ago: timedelta) -> str:
    """The query string of tasks enqueued within ``ago`` of now."""
    since = datetime.now(UTC).replace(microsecond=0) - ago
    return urlencode({"enqueued_at__gte": str(since)})


def _page_ids() -> str:
    """The ids of the task list's first page, as the live script sends them."""
    ids = TaskInstance.objects.order_by("-pk").values_list("pk", flat=True)[:50]
    return ",".join(str(pk) for pk in ids)


def measure(runs: int = 7) -> list[dict]:
    """Render each page ``runs`` times as a superuser; return median/max ms and query count."""
    user, _ = get_user_model().objects.get_or_create(
        username=USER, defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    results = []
    for name, url in pages().items():
        client.get(url)  # warm up: templates, connection, caches
        timings = []
        for _ in range(runs):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                reply = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
            if reply.status_code != 200:
                raise SystemExit(f"{url} answered {reply.status_code}")
        results.append(
            {
                "page": name,
                "url": url,
                "median_ms": statistics.median(timings),
                "max_ms": max(timings),
                "queries": len(queries),
            }
        )
    return results
