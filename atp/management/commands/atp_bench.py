"""``manage.py atp_bench``: measure ATP on the configured database and print a table."""

from django.core.management.base import BaseCommand

from atp import bench


class Command(BaseCommand):
    """The ``manage.py atp_bench`` command (see ``help``)."""

    help = "Benchmark enqueue rates, atpd drain throughput and idle enqueue-to-start latency."

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument("--tasks", type=int, default=2000, help="Tasks per drain run.")
        parser.add_argument("--runs", type=int, default=3, help="Runs per figure (median).")
        parser.add_argument("--concurrency", default="1,2,4", help="Drain with these -n.")
        parser.add_argument("--pool", choices=["processes", "threads"], default="processes")
        parser.add_argument("--latency-tasks", type=int, default=200)
        parser.add_argument("--json", default="var/bench.json", help="Where to write the JSON.")

    def handle(self, *args, **opts):
        """Run the command with the parsed options."""
        report = bench.run(
            tasks=opts["tasks"],
            runs=opts["runs"],
            concurrency=[int(n) for n in opts["concurrency"].split(",")],
            pool=opts["pool"],
            latency_tasks=opts["latency_tasks"],
            out=opts["json"],
        )
        write = self.stdout.write
        write(f"ATP benchmark on {report['database']}, medians of {report['runs']} runs")
        enqueue = report["enqueue"]
        write(f"  enqueue one by one   {enqueue['one_by_one_per_s']:10.0f} tasks/s")
        write(f"  enqueue bulk         {enqueue['bulk_per_s']:10.0f} tasks/s")
        for name, drain in report["drain"].items():
            commits = drain["commits_per_task"]
            extra = f"   {commits:.2f} commits/task" if commits is not None else ""
            write(
                f"  drain {name:<14} {drain['per_s']:10.0f} tasks/s "
                f"({drain['tasks']} in {drain['seconds']:.2f} s){extra}"
            )
        latency = report["latency"]
        write(
            f"  idle latency         p50 {latency['p50_ms']:.1f} ms  "
            f"p95 {latency['p95_ms']:.1f} ms  p99 {latency['p99_ms']:.1f} ms"
        )
        write(f"JSON written to {opts['json']}")
