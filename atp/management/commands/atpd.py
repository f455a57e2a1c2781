"""``manage.py atpd``: the ATP daemon (thin: parses options and runs ``atp.daemon``)."""

import logging

from django.core.management.base import BaseCommand, CommandError

from atp.checks import settings_errors
from atp.daemon import POOLS, Daemon, WorkerOptions
from atp.daemon.child_setup import ChildSettingsError
from atp.daemon.pool import PoolStartError

LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


def positive_int(text):
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text):
    """argparse type: a number > 0."""
    value = float(text)
    if value <= 0:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    """The ``manage.py atpd`` command (see ``help``)."""

    help = "Run the ATP daemon: claim queued tasks and run their handlers in a pool."

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument("-n", "--concurrency", type=positive_int, help="Handler slots.")
        parser.add_argument("--server-id", help="Daemon id (default: random per start).")
        parser.add_argument("--queues", help="Comma-separated queues to serve (default: all).")
        parser.add_argument("--burst", action="store_true", help="Drain the queue, then exit 0.")
        parser.add_argument("--max-tasks", type=positive_int, help="Exit after this many tasks.")
        parser.add_argument(
            "--poll-interval", type=positive_float, help="Seconds between idle polls."
        )
        parser.add_argument("--pool", choices=sorted(POOLS), default="processes")

    def handle(self, *args, **opts):
        """Run the command with the parsed options."""
        # Before anything else, and also under call_command (which skips system checks).
        errors = settings_errors()
        if errors:
            raise CommandError(
                "atpd refuses to start: "
                + " ".join(f"{error.msg} ({error.id})" for error in errors)
            )
        options = WorkerOptions(burst=opts["burst"], max_tasks=opts["max_tasks"], pool=opts["pool"])
        if opts["concurrency"]:
            options.concurrency = opts["concurrency"]
        if opts["server_id"]:
            options.server_id = opts["server_id"]
        if opts["queues"]:
            options.queues = [q.strip() for q in opts["queues"].split(",") if q.strip()]
            if not options.queues:
                raise CommandError("--queues names no queue")
        if opts["poll_interval"]:
            options.poll_interval = opts["poll_interval"]
        configure_logging(LEVELS[opts["verbosity"]])
        self.stdout.write(f"atpd server id {options.server_id}")
        self.stdout.flush()
        try:
            code = Daemon(options).run()
        except (PoolStartError, ChildSettingsError) as exc:
            # Raised before the daemon registered or claimed anything: no task was touched.
            raise CommandError(f"atpd cannot start: {exc}") from exc
        raise SystemExit(code)


def configure_logging(level) -> None:
    """Set ATP's log level; add a handler only when the project configured none."""
    atp_logger = logging.getLogger("atp")
    atp_logger.setLevel(level)
    if not atp_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        atp_logger.addHandler(handler)
