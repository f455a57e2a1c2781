"""``manage.py atp_bench_query --tasks N``: fill the database with N tasks, time atp.query."""

from django.core.management.base import BaseCommand
from django.db import connection

from atp.bench import query as bench_query


class Command(BaseCommand):
    """The ``manage.py atp_bench_query`` command (see ``help``)."""

    help = (
        "Benchmark ATP's task queries: make sure N benchmark tasks (types bench.*) exist, "
        "then report p50/p99 of the common reads. Writes to the configured database."
    )

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument("--tasks", type=int, required=True, help="Benchmark tasks wanted.")
        parser.add_argument("--repeat", type=int, default=200, help="Timed calls per case.")
        parser.add_argument("--batch", type=int, default=50_000, help="Tasks per insert batch.")

    def handle(self, *args, **opts):
        """Run the command with the parsed options."""
        self.stdout.write(f"database: {connection.vendor} {connection.settings_dict['NAME']}")
        added = bench_query.fill(
            opts["tasks"],
            batch=opts["batch"],
            progress=lambda done: self.stdout.write(f"  {done} tasks", ending="\r"),
        )
        self.stdout.write(f"added {added} task(s); {opts['tasks']} benchmark tasks in place")
        results = bench_query.measure(opts["tasks"], repeat=opts["repeat"])
        self.stdout.write(f"{'operation':<44} {'p50 ms':>8} {'p99 ms':>8}")
        for name, (p50, p99) in results.items():
            self.stdout.write(f"{name:<44} {p50:>8.2f} {p99:>8.2f}")
