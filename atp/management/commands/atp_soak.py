"""``manage.py atp_soak``: the fault-injection soak (thin: parses options, runs the soak)."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from atp.bench import soak


class Command(BaseCommand):
    """The ``manage.py atp_soak`` command (see ``help``)."""

    help = (
        "Run N tasks over K daemons while SIGKILLing a daemon, freezing one past "
        "WORKER_TIMEOUT, restarting the database (only a private cluster the soak creates) "
        "and restarting a daemon; print lost / stuck / duplicated / overlapping counts. "
        "Needs PostgreSQL (run with DATABASE_URL=postgres://...); by default the soak's "
        "database is a private cluster of its own, never DATABASE_URL's."
    )

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument("--tasks", type=int, default=2000, help="Tasks to run.")
        parser.add_argument("--daemons", type=int, default=3, help="Daemons (atpd processes).")
        parser.add_argument("-n", "--concurrency", type=int, default=2, help="Slots per daemon.")
        parser.add_argument(
            "--database",
            help="PostgreSQL URL to soak instead of a private cluster (then no database restart).",
        )
        parser.add_argument("--timeout", type=float, default=900.0, help="Seconds at most.")
        parser.add_argument("--json", help="Also write the figures to this file.")

    def handle(self, *args, **opts):
        """Run the soak and print its figures."""
        if connection.vendor != "postgresql":
            raise CommandError("atp_soak needs PostgreSQL: run it with DATABASE_URL=postgres://...")
        if min(opts["tasks"], opts["daemons"], opts["concurrency"]) < 1:
            raise CommandError("--tasks, --daemons and --concurrency must be at least 1")
        figures = soak.run(
            tasks=opts["tasks"],
            daemons=opts["daemons"],
            concurrency=opts["concurrency"],
            database=opts["database"],
            timeout=opts["timeout"],
            out=lambda line: self.stdout.write(line),
        )
        for key in ("tasks", "finished", "lost", "stuck", "duplicated", "overlapping"):
            self.stdout.write(f"{key:>12}: {figures[key]}")
        self.stdout.write(f"success events per task: {figures['success_events_per_task']}")
        self.stdout.write(f"attempts per task: {figures['attempts']}")
        self.stdout.write(
            f"took {figures['seconds']:.0f} s; faults: {'; '.join(figures['faults'])}"
        )
        if opts["json"]:
            with open(opts["json"], "w") as out:
                json.dump(figures, out, indent=2)
