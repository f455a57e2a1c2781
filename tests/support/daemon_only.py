"""A test app that loads only in the daemon's own process (tests/support/configured_atpd)."""

import os

from django.apps import AppConfig


class DaemonOnlyConfig(AppConfig):
    """Raises in ``ready()`` outside the process whose pid is ``ATP_TEST_DAEMON_PID``."""

    name = "tests.support.daemon_only"
    label = "daemon_only"

    def ready(self):
        """Fail in the pool's forkserver and children: they must report it, not run tasks."""
        if os.getpid() != int(os.environ["ATP_TEST_DAEMON_PID"]):
            raise RuntimeError("the daemon_only test app loads only in the daemon's process")
