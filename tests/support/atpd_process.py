"""Run ``manage.py atpd`` as a real subprocess on the test database (only its CLI is used)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120


def _command(*options) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), "atpd", *options]


def _env() -> dict:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.support.daemon_settings"
    env["ATP_TEST_DATABASE_NAME"] = str(connection.settings_dict["NAME"])
    return env


def run_atpd(*options) -> subprocess.CompletedProcess:
    """Run ``atpd`` with ``options`` (for example ``--burst``) to its end; fail if it fails."""
    done = subprocess.run(
        _command(*options), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, f"atpd {options} exited {done.returncode}:\n{done.stderr}"
    return done


def start_atpd(*options) -> subprocess.Popen:
    """Start ``atpd`` with ``options`` in the background, in a process group of its own."""
    return subprocess.Popen(
        _command(*options),
        cwd=ROOT,
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


def wait_until(condition, what: str, timeout: float = 60.0, interval: float = 0.05):
    """Poll ``condition()`` until it returns a true value, and return that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
