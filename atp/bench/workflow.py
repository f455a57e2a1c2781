"""The benchmark's workflow line: a chord of no-op tasks, enqueued and run to its callback.

``enqueue_s``: ``workflows.chord([...], callback).enqueue()`` of ``count`` no-op tasks plus
the callback (one transaction). ``end_to_end_s``: from launching ``atpd --burst -n 4``
(process pool) to the callback's ``finished_at``; the run fails unless every task FINISHED.
"""

import time

from atp import workflows
from atp.bench import throughput
from atp.models import Status, TaskInstance, Workflow

#: The daemon the chord runs on: the process pool's best drain configuration.
DAEMON = ("processes", 4)


def measure_chord(count: int = 1000) -> dict:
    """Enqueue a chord of ``count`` no-op tasks and run it to its callback; the timings."""
    throughput.reset([throughput.MEASURED])
    begin = time.perf_counter()
    handle = workflows.chord(
        [workflows.task(throughput.MEASURED) for _ in range(count)],
        workflows.task(throughput.MEASURED),
    ).enqueue("bench chord")
    enqueue_s = time.perf_counter() - begin
    try:
        pool, concurrency = DAEMON
        run = throughput._drain_run(count + 1, concurrency, pool, "--burst")
        callback = TaskInstance.objects.get(pk=handle.end_task_id)
        if callback.status != Status.FINISHED:
            raise RuntimeError(f"the chord's callback ended {callback.status_name}")
        # The callback ends last (it waits for every other task), so the run's wall time,
        # launch -> last finished_at, is launch -> callback finished.
        return {
            "tasks": count,
            "enqueue_s": enqueue_s,
            "end_to_end_s": run["wall_s"],
            "drain_per_s": run["steady_per_s"],
        }
    finally:
        throughput.reset([throughput.MEASURED])
        Workflow.objects.filter(name="bench chord").delete()
