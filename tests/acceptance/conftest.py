"""Fixtures that start real ``manage.py atpd`` processes against the test database."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import OperationalError, connection

from atp.daemon.db import database_url

REPO = Path(__file__).resolve().parents[2]

#: Short liveness timings so recovery happens within seconds in the tests.
FAST = {"WORKER_TIMEOUT": 3, "HEARTBEAT_INTERVAL": 0.5, "POLL_INTERVAL": 0.2}


def wait_until(predicate, timeout=60.0, interval=0.05, what="condition"):
    """Poll ``predicate`` until it is true; tolerate the database restarting meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OperationalError:
            connection.close()
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Daemons:
    """Starts atpd subprocesses (each in its own session) and cleans them up."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, *args, settings=None, faults=None, url=None) -> subprocess.Popen:
        """Start ``manage.py atpd *args`` with ATP settings overrides.

        ``faults`` plants faults in the daemon (``tests.support.faults``); ``url`` is the
        database it connects to (default: the test database).
        """
        env = dict(os.environ)
        env["DATABASE_URL"] = url or database_url()
        env["ATP_SETTINGS"] = json.dumps({**FAST, **(settings or {})})
        env["ATP_LOG_LEVEL"] = "DEBUG"
        if faults:
            env["DJANGO_SETTINGS_MODULE"] = "tests.support.faults.settings"
            env["ATP_TEST_FAULTS"] = json.dumps(faults)
        log = open(self.log_dir / f"atpd-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "atpd", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = log.name
        self.procs.append(proc)
        return proc

    def output(self, proc) -> str:
        """What the daemon printed so far."""
        return Path(proc.log_path).read_text()

    def stop_all(self) -> None:
        """Kill whatever is still running, with its process group."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


@pytest.fixture
def daemons(tmp_path):
    """Start atpd subprocesses against the test database; all are killed afterwards."""
    runner = Daemons(tmp_path)
    yield runner
    runner.stop_all()
