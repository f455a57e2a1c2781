"""The benchmark's workflow line: a chord of no-op tasks, enqueued and run to its callback.

``enqueue_s``: ``workflows.chord([...], callback).enqueue()`` of ``count`` no-op tasks plus
the callback (one transaction). ``end_to_end_s``: from launching ``atpd --burst -n 4``
(process pool) to the callback's ``finished_at``; the run fails unless every task FINISHED.
"""

import time
from collections.abc import Callable

from atp import workflows
from atp.models import Status, TaskInstance, Workflow

#: The daemon the chord runs on: the process pool's best drain configuration.
DAEMON = ("processes", 4)


def measure_chord(count: int, handler: str, reset: Callable, drain_run: Callable) -> dict:
    """Enqueue a chord of ``count`` no-op tasks and run it to its callback; the timings.

    ``handler`` is the measured task type, ``reset`` and ``drain_run`` are the benchmark's
    own (``atp.bench.throughput`` passes them, so this module need not import it).
    """
    reset([handler])
    begin = time.perf_counter()
    handle = workflows.chord(
        [workflows.task(handler) for _ in range(count)],
        workflows.task(handler),
    ).enqueue("bench chord")
    enqueue_s = time.perf_counter() - begin
    try:
        pool, concurrency = DAEMON
        run = drain_run(count + 1, concurrency, pool, "--burst")
        callback = TaskInstance.objects.get(pk=handle.end_task_id)  # type: ignore[misc]
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
        reset([handler])
        Workflow.objects.filter(name="bench chord").delete()
