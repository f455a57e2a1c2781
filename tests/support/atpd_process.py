"""Run ``manage.py atpd`` as real subprocesses on the test database, and wait for their effects.

Two kinds of daemon, one module:

- ``run_atpd`` / ``start_atpd`` / ``kill_atpd``: the daemon as a user runs it, on the
  test database by name (``tests.support.daemon_settings``), output discarded; only its
  command line is used.
- ``Daemons`` (the acceptance tests' ``daemons`` fixture): daemons on a database URL with
  short liveness timings (``FAST``), a log file each, and faults planted on request
  (``tests.support.faults``).

``wait_until`` polls for what the daemons do, for every test that starts one.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.db import OperationalError, connection

from atp.daemon.db import database_url

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120

#: Short liveness timings so recovery happens within seconds in the tests.
FAST = {"WORKER_TIMEOUT": 3, "HEARTBEAT_INTERVAL": 0.5, "POLL_INTERVAL": 0.2}


def wait_until(condition, what: str = "condition", timeout: float = 60.0, interval: float = 0.05):
    """Poll ``condition()`` until it returns a true value, and return that value.

    A database error while polling (a test may restart the server) closes this process's
    connection and the polling goes on.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OperationalError:
            connection.close()
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _command(*options) -> list[str]:
    return [sys.executable, str(REPO / "manage.py"), "atpd", *options]


# --- atpd as a user runs it -------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.support.daemon_settings"
    env["ATP_TEST_DATABASE_NAME"] = str(connection.settings_dict["NAME"])
    return env


def run_atpd(*options) -> subprocess.CompletedProcess:
    """Run ``atpd`` with ``options`` (for example ``--burst``) to its end; fail if it fails."""
    done = subprocess.run(
        _command(*options), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, f"atpd {options} exited {done.returncode}:\n{done.stderr}"
    return done


def start_atpd(*options) -> subprocess.Popen:
    """Start ``atpd`` with ``options`` in the background, in a process group of its own."""
    return subprocess.Popen(
        _command(*options),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_atpd(process: subprocess.Popen) -> None:
    """SIGKILL a daemon and every process it started (a crash: no clean-up runs)."""
    # The whole group: a daemon that runs handlers in child processes must not leave
    # them running on after the test.
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


# --- daemons of the acceptance tests ----------------------------------------------------


class Daemons:
    """Starts atpd subprocesses (each in its own session) and cleans them up."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, *args, settings=None, faults=None, url=None, env=None) -> subprocess.Popen:
        """Start ``manage.py atpd *args`` with ATP settings overrides.

        ``faults`` plants faults in the daemon (``tests.support.faults``); ``url`` is the
        database it connects to (default: the test database); ``env`` adds environment
        variables (``LISTEN_DATABASE_URL``: see ``settings/``).
        """
        env = {**os.environ, **(env or {})}
        env["DATABASE_URL"] = url or database_url()
        env["ATP_SETTINGS"] = json.dumps({**FAST, **(settings or {})})
        env["ATP_LOG_LEVEL"] = "DEBUG"
        if faults:
            env["DJANGO_SETTINGS_MODULE"] = "tests.support.faults.settings"
            env["ATP_TEST_FAULTS"] = json.dumps(faults)
        log = open(self.log_dir / f"atpd-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            _command(*args),
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
