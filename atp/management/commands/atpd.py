"""``manage.py atpd``: the ATP daemon (thin: parses options and runs ``atp.daemon``)."""

from django.core.management.base import BaseCommand

from atp.daemon import Daemon, WorkerOptions


class Command(BaseCommand):
    help = "Run the ATP daemon: claim queued tasks and run their handlers."

    def add_arguments(self, parser):
        parser.add_argument("--server-id", help="Daemon id (default: random per start).")
        parser.add_argument("--queues", help="Comma-separated queues to serve (default: all).")
        parser.add_argument("--burst", action="store_true", help="Drain the queue, then exit 0.")
        parser.add_argument("--max-tasks", type=int, help="Exit after this many tasks.")
        parser.add_argument("--poll-interval", type=float, help="Seconds between idle polls.")

    def handle(self, *args, **opts):
        options = WorkerOptions(burst=opts["burst"], max_tasks=opts["max_tasks"])
        if opts["server_id"]:
            options.server_id = opts["server_id"]
        if opts["queues"]:
            options.queues = [q.strip() for q in opts["queues"].split(",") if q.strip()]
        if opts["poll_interval"] is not None:
            options.poll_interval = opts["poll_interval"]
        self.stdout.write(f"atpd server id {options.server_id}")
        raise SystemExit(Daemon(options).run())
