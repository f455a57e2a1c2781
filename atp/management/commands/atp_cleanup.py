"""``manage.py atp_cleanup``: the daemon's sweeps, for cron. Safe while daemons run."""

from django.core.management.base import BaseCommand
from django.utils import timezone

from atp import tracker
from atp.conf import settings
from atp.models import TaskInstance, Worker


class Command(BaseCommand):
    """The ``manage.py atp_cleanup`` command (see ``help``)."""

    help = (
        "Recover tasks of lost daemons, re-enqueue (or fail) zombie tasks and delete tasks "
        "past their retention time. Prints what it did."
    )

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would be done; change nothing."
        )

    def handle(self, *args, dry_run, **options):
        """Run the command with the parsed options."""
        if dry_run:
            self._preview()
            return
        done = tracker.recover_lost_workers(settings.WORKER_TIMEOUT, "Recovered by atp_cleanup.")
        done += tracker.reenqueue_zombie_tasks("Re-enqueued by atp_cleanup.")
        done += tracker.delete_retired_tasks()
        for entry in done:
            self.stdout.write(f"{entry.action:<10} {entry.name} (id {entry.task_id})")
        self.stdout.write(f"{len(done)} task(s) handled.")

    def _preview(self):
        """List what a real run would act on (it may differ by the time it runs)."""
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
            for task in tasks.select_related("type").order_by("pk"):
                self.stdout.write(f"would handle {label:<9} {task} (id {task.pk})")
                total += 1
        self.stdout.write(f"{total} task(s) would be handled (dry run: nothing changed).")
