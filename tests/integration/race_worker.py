"""One of several OS processes that race each other through the tracker (concurrency tests).

    python -m tests.integration.race_worker claim SERVER_ID LIMIT
    python -m tests.integration.race_worker enqueue TYPE PREFIX COUNT
    python -m tests.integration.race_worker unique TYPE KEY COUNT

``DATABASE_URL`` names the database (the tests pass their test database). The process sets
Django up, connects, prints ``ready`` and then reads a start time (epoch seconds) from stdin:
all racers sleep until that same moment, so their work really overlaps. ``claim`` dequeues
until the queue is empty and prints the claimed ids; ``enqueue`` tries COUNT enqueues and
prints how many were accepted and how many hit ``QueueFull``; ``unique`` calls
``enqueue_unique`` COUNT times with one key and prints the ids it got and how many calls
created their task. The report is one JSON line.
"""

import json
import os
import sys
import time


def _claim(server_id: str, limit: str) -> list[int]:
    from atp import tracker
    from atp.exceptions import QueueEmpty

    claimed: list[int] = []
    while True:
        try:
            claimed += tracker.dequeue_task(server_id, limit=int(limit))
        except QueueEmpty:
            return claimed


def _enqueue(type_identifier: str, prefix: str, count: str) -> dict[str, int]:
    from atp import tracker
    from atp.exceptions import QueueFull

    outcome = {"ok": 0, "full": 0}
    for n in range(int(count)):
        try:
            tracker.enqueue_task(type_identifier, f"{prefix}-{n}")
            outcome["ok"] += 1
        except QueueFull:
            outcome["full"] += 1
    return outcome


def _unique(type_identifier: str, key: str, count: str) -> dict:
    from atp import tracker

    ids, created = set(), 0
    for _ in range(int(count)):
        task_id, made = tracker.enqueue_unique(type_identifier, unique_key=key)
        ids.add(task_id)
        created += made
    return {"ids": sorted(ids), "created": created}


def main(argv: list[str]) -> None:
    """Set up, wait at the start line, race, report."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    import django

    django.setup()
    from django.db import connection

    # Connect before the start line, so that the race is about the queue, not about start-up.
    connection.ensure_connection()
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.time()))

    mode, args = argv[0], argv[1:]
    report = {"claim": _claim, "enqueue": _enqueue, "unique": _unique}[mode](*args)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
