"""The atpd engine: claims tasks from the database queue and runs their handlers."""

import logging
import os
import time
from dataclasses import dataclass, field

from django.db import close_old_connections

from atp import tracker
from atp.conf import settings
from atp.exceptions import QueueEmpty
from atp.runner import run_task

logger = logging.getLogger("atp.daemon")


def new_server_id() -> str:
    """A random server id, unique per process start, printed like the seed's: 0x%016X."""
    return f"0x{int.from_bytes(os.urandom(8), 'big'):016X}"


@dataclass
class WorkerOptions:
    """Everything that shapes a daemon's run; defaults come from ``settings.ATP``."""

    concurrency: int = field(default_factory=lambda: settings.CONCURRENCY or os.cpu_count() or 1)
    server_id: str = field(default_factory=new_server_id)
    queues: list[str] | None = None
    burst: bool = False
    max_tasks: int | None = None
    poll_interval: float = field(default_factory=lambda: settings.POLL_INTERVAL)


class Daemon:
    """Claims due tasks and runs them one at a time in this process."""

    def __init__(self, options: WorkerOptions):
        self.options = options
        self.processed = 0
        self.since_cleanup = 0

    def run(self) -> int:
        """Serve the queue until stopped (or, with ``burst``, until it is empty)."""
        logger.info("[%s] atpd started", self.options.server_id)
        while self.options.max_tasks is None or self.processed < self.options.max_tasks:
            close_old_connections()
            try:
                task_ids = tracker.dequeue_task(self.options.server_id, queues=self.options.queues)
            except QueueEmpty:
                self.cleanup()
                if self.options.burst:
                    break
                time.sleep(self.options.poll_interval)
                continue
            for task_id in task_ids:
                run_task(task_id, self.options.server_id)
                self.processed += 1
            self.since_cleanup += len(task_ids)
            if self.since_cleanup >= settings.CLEANUP_EVERY:
                self.cleanup()
        logger.info("[%s] atpd stopped after %d task(s)", self.options.server_id, self.processed)
        return 0

    def cleanup(self) -> None:
        """Run the zombie and retention sweeps, as the seed's daemon did when idle."""
        self.since_cleanup = 0
        tracker.reenqueue_zombie_tasks("Re-enqueued by atpd after timeout.")
        tracker.delete_retired_tasks()
