"""The fault-injection soak behind ``manage.py atp_soak``: many tasks, several daemons, and
the faults a fleet meets (a daemon SIGKILLed, a daemon frozen past ``WORKER_TIMEOUT``, a
database restart, a daemon restart), then the counts that say whether ATP kept its promise.

Each task runs ``record``, which logs its attempt's start and end to a file; an attempt
writes its end only if it is still the task's current attempt (a fenced heartbeat), so
two overlapping intervals mean two attempts of one task really ran at once. Figures:
lost (ended other than FINISHED), stuck (not ended), duplicated (more than one
``task-succeeded``), overlapping (attempts of one task whose intervals cross), and the
``task-succeeded`` events per task.
"""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings as django_settings

from atp import tracker
from atp.bench.cluster import PgCluster, point_default_at
from atp.models import TERMINAL, LogRecord, Status, TaskInstance

TYPE = "soak.record"
#: Daemon settings: short liveness timings so recoveries happen within the run, and a
#: worker timeout above the reconnection backoff plus a heartbeat (atp.daemon.engine).
DAEMON_SETTINGS = {"WORKER_TIMEOUT": 8, "HEARTBEAT_INTERVAL": 1, "POLL_INTERVAL": 0.5}


def record(task_status, input):
    """Log this attempt's start, work ``input["seconds"]``, log its end if still current."""

    def note(event):
        line = {
            "task": task_status.task_id,
            "attempt": task_status.attempt,
            "pid": os.getpid(),
            "event": event,
            "t": time.time(),
        }
        # One short write with O_APPEND: lines of concurrent processes never interleave.
        with open(input["log"], "a") as log:
            log.write(json.dumps(line) + "\n")

    note("start")
    time.sleep(float(input["seconds"]))
    task_status.heartbeat()  # raises StaleAttempt if the task was given to another attempt
    note("end")


@dataclass
class Fleet:
    """The daemons of a soak: started, killed, frozen and restarted by index."""

    url: str
    concurrency: int
    log_dir: Path
    procs: dict = field(default_factory=dict)
    starts: int = 0

    def start(self, index: int) -> None:
        """Start daemon ``index`` (``--server-id soak-<index>``) in a process group of its own."""
        env = dict(os.environ, DATABASE_URL=self.url, ATP_SETTINGS=json.dumps(DAEMON_SETTINGS))
        self.starts += 1
        log = open(self.log_dir / f"atpd-{index}-{self.starts}.log", "w")  # noqa: SIM115
        self.procs[index] = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "atpd",
                "-n",
                str(self.concurrency),
                "--server-id",
                f"soak-{index}",
            ],  # fmt: skip
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal_group(self, index: int, signum: int) -> None:
        """Send ``signum`` to daemon ``index`` and its pool (its process group)."""
        try:
            os.killpg(self.procs[index].pid, signum)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        """Warm-stop every daemon; kill what is left after 30 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for index, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.signal_group(index, signal.SIGKILL)
                proc.wait()


def run(tasks=2000, daemons=3, concurrency=2, database=None, timeout=900.0, out=print) -> dict:
    """Run the soak; return its figures. ``database``: a URL to use instead of a private
    cluster (then the database is not restarted: it is not the soak's to restart)."""
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="atp-soak-"))
        cluster = None
        if database is None:
            cluster = PgCluster().init()
            stack.callback(cluster.destroy)
            cluster.start()
            cluster.psql("CREATE DATABASE atp_soak")
            database = cluster.url("atp_soak")
        stack.enter_context(point_default_at(database))
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        url = database
        out(f"soak: {tasks} tasks over {daemons} daemons (-n {concurrency}) on {url}")
        tracker.register_task_type(
            TYPE, f"{__name__}.record", maxrestart=20, timeout=600, max_queue_size=tasks
        )
        handler_log = work / "attempts.jsonl"
        rng = random.Random(7)  # noqa: S311 - task durations, not secrets
        ids = [
            tracker.enqueue_task(
                TYPE,
                f"t{n}",
                {"seconds": rng.choice([0.005, 0.02, 0.05, 0.5]), "log": str(handler_log)},
            )
            for n in range(tasks)
        ]
        fleet = Fleet(url, concurrency, work)
        stack.callback(fleet.stop_all)
        for index in range(daemons):
            fleet.start(index)
        faults = _faults(fleet, cluster, daemons)
        deadline = time.monotonic() + timeout
        began = time.monotonic()
        while time.monotonic() < deadline:
            ended = _count_ended(ids)
            while faults and ended >= faults[0][0] * tasks:
                _, name, act = faults.pop(0)
                out(f"soak: {ended}/{tasks} ended at {time.monotonic() - began:.0f} s: {name}")
                act()
            if ended == tasks and not faults:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - began
        fleet.stop_all()
        figures = _figures(ids, handler_log)
        figures.update(tasks=tasks, daemons=daemons, concurrency=concurrency, seconds=elapsed)
        figures["faults"] = [name for _, name, _ in _faults(fleet, cluster, daemons)]
        figures["work_dir"] = str(work)
        return figures


def _count_ended(ids) -> int:
    for _ in range(20):  # the database may be restarting (one of the faults)
        try:
            return TaskInstance.objects.filter(pk__in=ids, status__in=TERMINAL).count()
        except Exception:  # noqa: BLE001 - OperationalError while it restarts
            from django.db import connection

            connection.close()
            time.sleep(0.5)
    raise RuntimeError("the database did not come back")


def _faults(fleet: Fleet, cluster, daemons: int) -> list:
    """(fraction of tasks ended, name, action): the faults, in the order they strike."""
    last = daemons - 1

    def kill():
        fleet.signal_group(0, signal.SIGKILL)
        fleet.procs[0].wait()
        fleet.start(0)

    def freeze():
        fleet.signal_group(min(1, last), signal.SIGSTOP)
        time.sleep(DAEMON_SETTINGS["WORKER_TIMEOUT"] + 4)
        fleet.signal_group(min(1, last), signal.SIGCONT)

    def restart_database():
        cluster.restart()

    def restart_daemon():
        fleet.procs[last].send_signal(signal.SIGTERM)
        fleet.procs[last].wait(timeout=120)
        fleet.start(last)

    faults = [
        (0.15, "SIGKILL daemon 0 (and its pool), start it again", kill),
        (0.35, "SIGSTOP daemon 1 and its pool past WORKER_TIMEOUT, then SIGCONT", freeze),
    ]
    if cluster is not None:
        faults.append((0.55, "restart the database server", restart_database))
    faults.append((0.75, f"warm-stop daemon {last} and start it again", restart_daemon))
    return faults


def _figures(ids, handler_log: Path) -> dict:
    statuses = dict(TaskInstance.objects.filter(pk__in=ids).values_list("pk", "status"))
    successes = Counter(
        LogRecord.objects.filter(instance_id__in=ids, event="task-succeeded").values_list(
            "instance_id", flat=True
        )
    )
    intervals: dict = defaultdict(dict)  # task → attempt → [start, end]
    for line in handler_log.read_text().splitlines() if handler_log.exists() else []:
        entry = json.loads(line)
        intervals[entry["task"]].setdefault(entry["attempt"], [None, None])
        intervals[entry["task"]][entry["attempt"]][entry["event"] == "end"] = entry["t"]
    overlapping = 0
    for attempts in intervals.values():
        spans = sorted(span for span in attempts.values() if None not in span)
        overlapping += any(
            later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)
        )
    per_task = Counter(successes.get(task_id, 0) for task_id in ids)
    return {
        "finished": sum(status == Status.FINISHED for status in statuses.values()),
        "lost": sum(
            status in TERMINAL and status != Status.FINISHED for status in statuses.values()
        )
        + (len(ids) - len(statuses)),
        "stuck": sum(status not in TERMINAL for status in statuses.values()),
        "duplicated": sum(count > 1 for count in successes.values()),
        "overlapping": overlapping,
        "success_events_per_task": {str(key): value for key, value in sorted(per_task.items())},
        "attempts": dict(
            sorted(
                Counter(
                    TaskInstance.objects.filter(pk__in=ids).values_list("attempts", flat=True)
                ).items()
            )
        ),
    }
