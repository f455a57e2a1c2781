"""The fleet section of atp_bench with real idle daemons (atp.bench.fleet)."""

import math

import pytest

from atp.bench import fleet
from atp.bench import throughput as bench
from atp.models import TaskInstance

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_the_fleet_section_measures_what_idle_daemons_cost(monkeypatch):
    monkeypatch.setattr(fleet, "WARMUP", 1.0)
    bench.setup()
    monkeypatch.setattr(fleet, "WAKEUPS", 5)
    measured, stamp = bench.MEASURED, bench.STAMP
    figures = fleet.measure(2, 2.0, bench._daemon, bench._stop, measured, stamp, bench.reset)
    assert figures["daemons"] == 2 and figures["seconds"] >= 2.0
    assert figures["commits_per_s"] > 0  # heartbeats and polls commit
    assert figures["rollbacks_per_s"] == 0
    assert figures["server_ms_per_s"] > 0
    # Each daemon: its own connection and its LISTEN one; then its recorder's and its handler
    # processes' (a daemon whose handlers got none of the work opens fewer).
    assert (figures["connections"], figures["listen_connections"]) == (2, 1)
    assert 2 < figures["connections_after_work"] <= 3 + fleet.CONCURRENCY
    # Five wake-ups are too few to tell from the statistics' one-second blur: a figure only.
    assert math.isfinite(figures["commits_per_enqueue"])
    assert not TaskInstance.objects.filter(type__identifier__in=[measured, stamp]).exists()
    rows = bench.table({"fleet": {"2": figures}})
    assert [row[2] for row in rows] == [
        "commits",
        "queries",
        "server time",
        "connections",
        "of which LISTEN",
        "after handlers wrote",
        "commits per enqueue",
    ]
    assert bench.table({"fleet": {"skipped": "PostgreSQL only"}})[0][1] == "skipped"
