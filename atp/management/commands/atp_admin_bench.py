"""``manage.py atp_admin_bench``: time the admin's pages on a big task table (PostgreSQL)."""

from django.core.management.base import BaseCommand

from atp.bench import admin as admin_bench
from atp.bench.history import fill_history
from atp.models import TaskInstance


class Command(BaseCommand):
    """The ``manage.py atp_admin_bench`` command (see ``help``)."""

    help = "Fill PostgreSQL with generated tasks and time the admin's list and dashboard."

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument("--rows", type=int, default=1_000_000, help="Tasks to generate.")
        parser.add_argument("--no-fill", action="store_true", help="Time the existing rows.")
        parser.add_argument("--runs", type=int, default=7, help="Renders per page (median).")
        parser.add_argument(
            "--history",
            type=int,
            default=0,
            help="First insert this many FINISHED tasks with 3 log records each, enqueued over "
            "the last 30 days (replaces an earlier --history; 10,000,000 take ~20 min, 15 GB).",
        )

    def handle(self, *args, **opts):
        """Run the command with the parsed options."""
        if opts["history"]:
            seconds = fill_history(opts["history"], progress=self._progress)
            self.stdout.write(f"Filled a history of {opts['history']} tasks in {seconds:.1f} s")
        if not opts["no_fill"]:
            seconds = admin_bench.fill(opts["rows"])
            self.stdout.write(f"Filled {opts['rows']} tasks in {seconds:.1f} s")
        total = TaskInstance.objects.count()
        self.stdout.write(f"{total} task rows; median / max of {opts['runs']} renders:")
        for row in admin_bench.measure(opts["runs"]):
            self.stdout.write(
                f"  {row['page']:<24} {row['median_ms']:7.1f} ms  (max {row['max_ms']:6.1f} ms, "
                f"{row['queries']} queries)  {row['url']}"
            )

    def _progress(self, done: int) -> None:
        self.stdout.write(f"  {done} history tasks", ending="\n")
        self.stdout.flush()
