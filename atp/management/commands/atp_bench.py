"""``manage.py atp_bench``: measure ATP on the configured database and print a table."""

import argparse

from django.core.management.base import BaseCommand, CommandError

from atp.bench import claim, cleanup
from atp.bench import throughput as bench
from atp.daemon import POOLS


def int_list(text):
    """argparse type: comma-separated integers ≥ 1, for example ``1000,1000000``."""
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def drain_variants(text):
    """argparse type: comma-separated ``pool:n``, for example ``processes:2,threads:4``."""
    variants = []
    for item in text.split(","):
        pool, _, n = item.strip().partition(":")
        if pool not in POOLS or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"expected pool:n (pool one of {sorted(POOLS)})")
        variants.append((pool, int(n)))
    return variants


def section_list(text):
    """argparse type: comma-separated sections of ``bench.SECTIONS``."""
    sections = [item.strip() for item in text.split(",") if item.strip()]
    unknown = set(sections) - set(bench.SECTIONS)
    if not sections or unknown:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(bench.SECTIONS)}")
    return sections


class Command(BaseCommand):
    """The ``manage.py atp_bench`` command (see ``help``)."""

    help = (
        "Benchmark enqueue rates, atpd drain throughput, idle enqueue-to-start latency and "
        "drain rate against a large backlog, on the configured database (use one of its own)."
    )

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument(
            "--sections",
            type=section_list,
            default=list(bench.DEFAULT_SECTIONS),
            help="Comma-separated: enqueue,drain,latency,backlog,workflow,pgbench,async,claim,"
            "cleanup,fleet (default all but fleet).",
        )
        parser.add_argument("--tasks", type=int, default=5000, help="Tasks per drain run.")
        parser.add_argument("--runs", type=int, default=3, help="Runs per figure (median).")
        parser.add_argument(
            "--drain",
            type=drain_variants,
            default=list(bench.DRAIN_VARIANTS),
            help="Daemons to drain with, as pool:n "
            "(default processes:1,processes:2,processes:4,threads:4).",
        )
        parser.add_argument("--latency-tasks", type=int, default=200, help="Tasks per latency run.")
        parser.add_argument(
            "--backlog",
            type=int_list,
            help="Waiting filler tasks to drain in front of (default 1000,1000000).",
        )
        parser.add_argument(
            "--backlog-tasks", type=int, default=5000, help="Measured tasks per backlog run."
        )
        parser.add_argument(
            "--chord-tasks",
            type=int,
            default=bench.CHORD_TASKS,
            help="No-op tasks in the workflow section's chord (default 1000).",
        )
        parser.add_argument(
            "--pgbench-seconds",
            type=int,
            default=5,
            help="Seconds per pgbench run of the pgbench section (default 5).",
        )
        parser.add_argument(
            "--claims",
            type=int,
            default=claim.CLAIMS,
            help="Claims per statement and run of the claim section (default 1000).",
        )
        parser.add_argument(
            "--claim-waiting",
            type=int,
            default=claim.WAITING,
            help="Waiting tasks the claim section claims from (default 5000).",
        )
        parser.add_argument(
            "--claim-batch",
            type=int,
            default=claim.BATCH,
            help="Tasks per claim in the claim section (default 32; at most --claim-waiting).",
        )
        parser.add_argument(
            "--cleanup-tasks",
            type=int,
            default=cleanup.CLEANUP_TASKS,
            help="Retired tasks the cleanup section deletes (default 1000000).",
        )
        parser.add_argument(
            "--fleet",
            type=int_list,
            help="Fleet sizes: idle daemons measured together (default 1,4,8).",
        )
        parser.add_argument(
            "--fleet-seconds",
            type=float,
            help="Seconds each fleet's counters are read apart (default 30).",
        )
        parser.add_argument("--json", default="var/bench.json", help="Where to write the JSON.")

    def handle(self, *args, **opts):
        """Run the command with the parsed options."""
        if opts["claims"] < 1 or not 1 <= opts["claim_batch"] <= opts["claim_waiting"]:
            raise CommandError("--claims must be at least 1, --claim-batch 1 to --claim-waiting")
        report = bench.run(
            tasks=opts["tasks"],
            runs=opts["runs"],
            drain=opts["drain"],
            latency_tasks=opts["latency_tasks"],
            backlog=opts["backlog"],
            backlog_tasks=opts["backlog_tasks"],
            sections=opts["sections"],
            out=opts["json"],
            chord_tasks=opts["chord_tasks"],
            pgbench_seconds=opts["pgbench_seconds"],
            claims=opts["claims"],
            claim_waiting=opts["claim_waiting"],
            claim_batch=opts["claim_batch"],
            cleanup_tasks=opts["cleanup_tasks"],
            fleet=opts["fleet"],
            fleet_seconds=opts["fleet_seconds"],
        )
        rows = [("section", "variant", "figure", "value", "unit"), *bench.table(report)]
        widths = [max(len(row[column]) for row in rows) for column in range(5)]
        write = self.stdout.write
        write(f"ATP benchmark on {report['database']}, medians of {report['runs']} runs")
        for row in rows:
            cells = [
                text.rjust(width) if column == 3 else text.ljust(width)
                for column, (text, width) in enumerate(zip(row, widths, strict=True))
            ]
            write("  ".join(cells).rstrip())
        write(bench.LEGEND)
        write(f"{report['seconds']:.0f} s in all; JSON written to {opts['json']}")
