"""``manage.py atp_cleanup``: the daemon's sweeps, for cron. Safe while daemons run."""

import time
from collections import Counter

from django.core.management.base import BaseCommand
from django.utils import timezone

from atp import tracker
from atp.conf import settings
from atp.models import TaskInstance, Worker
from atp.tracker import subtasks

#: Seconds between progress lines while one sweep works through a long list.
PROGRESS_EVERY = 2.0


class Command(BaseCommand):
    """The ``manage.py atp_cleanup`` command (see ``help``)."""

    help = (
        "Recover tasks of lost daemons, re-enqueue (or fail) zombie tasks, delete tasks past "
        "their retention time and end subtask parents whose subtasks vanished. Prints "
        "progress on long runs and a summary per sweep; -v 2 lists every task."
    )

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would be done; change nothing."
        )

    def handle(self, *args, dry_run, verbosity, **options):
        """Run the command with the parsed options."""
        if dry_run:
            self._preview(verbosity)
            return
        sweeps = [
            (
                "lost daemons",
                lambda progress: tracker.recover_lost_workers(
                    settings.WORKER_TIMEOUT, "Recovered by atp_cleanup.", progress=progress
                ),
            ),
            (
                "zombies",
                lambda progress: tracker.reenqueue_zombie_tasks(
                    "Re-enqueued by atp_cleanup.", progress=progress
                ),
            ),
            ("retired", lambda progress: tracker.delete_retired_tasks(progress=progress)),
            ("subtask parents", lambda progress: subtasks.settle_waiting_parents()),
        ]
        total = 0
        for label, sweep in sweeps:
            started = time.monotonic()
            done = sweep(self._progress_printer(label, started) if verbosity else None)
            total += len(done)
            if verbosity >= 2:
                for entry in done:
                    self.stdout.write(f"{entry.action:<10} {entry.name} (id {entry.task_id})")
            if verbosity:
                actions = Counter(entry.action for entry in done)
                what = ", ".join(f"{count} {action}" for action, count in actions.items())
                took = time.monotonic() - started
                self.stdout.write(f"{label:<16} {what or 'nothing to do'} ({took:.1f} s)")
        self.stdout.write(f"{total} task(s) handled.")

    def _progress_printer(self, label, started):
        """A ``progress(count)`` callback printing a line at most every PROGRESS_EVERY s."""
        last = [started]

        def progress(count):
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                self.stdout.write(f"{label}: {count} task(s) so far ({now - started:.1f} s)")

        return progress

    def _preview(self, verbosity):
        """Count (-v 2: list) what a real run would act on (it may differ by the time it runs)."""
        now = timezone.now()
        cutoff = now - timezone.timedelta(seconds=settings.WORKER_TIMEOUT)
        lost = list(Worker.objects.lost(cutoff))
        groups = [
            (
                "lost",
                TaskInstance.objects.filter(server_id__in=[w.server_id for w in lost]).active(),
            ),
            ("unstarted", TaskInstance.objects.unstarted(now, settings.CLAIM_TIMEOUT)),
            ("zombie", TaskInstance.objects.stale(now, settings.WORKER_TIMEOUT)),
            ("retired", TaskInstance.objects.retired(now)),
        ]
        total = 0
        for label, tasks in groups:
            if verbosity >= 2:
                for task in tasks.select_related("type").order_by("pk"):
                    self.stdout.write(f"would handle {label:<9} {task} (id {task.pk})")
            count = tasks.count()
            total += count
            if verbosity:
                self.stdout.write(f"{label:<16} {count} task(s) would be handled")
        self.stdout.write(f"{total} task(s) would be handled (dry run: nothing changed).")
