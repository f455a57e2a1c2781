"""Run ``atpd`` from a script whose settings come from ``settings.configure()``, no module.

``python tests/support/configured_atpd.py DATABASE_URL [atpd options…]``, as a reusable app's
test suite or a maintenance script would. With ``ATP_TEST_BREAK_CHILDREN=1`` the settings
also install ``tests.support.daemon_only``, an app that cannot load outside this process, so
the daemon's pool children cannot start.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    """Configure Django in code, then run ``atpd`` with the command line's options."""
    sys.path.insert(0, str(ROOT))
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)  # the settings below are the only ones
    import dj_database_url
    import django
    from django.conf import settings
    from django.core.management import CommandError, call_command

    database = dj_database_url.parse(sys.argv[1])
    if database["ENGINE"].endswith("sqlite3"):
        database["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}
    apps = ["django.contrib.contenttypes", "django.contrib.auth", "atp"]
    if os.environ.get("ATP_TEST_BREAK_CHILDREN") == "1":
        os.environ["ATP_TEST_DAEMON_PID"] = str(os.getpid())
        apps.append("tests.support.daemon_only.DaemonOnlyConfig")
    settings.configure(
        DATABASES={"default": database},
        INSTALLED_APPS=apps,
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        SECRET_KEY="configured-in-code-for-a-test",  # noqa: S106
        ATP={"POLL_INTERVAL": 0.2, "HEARTBEAT_INTERVAL": 0.5, "WORKER_TIMEOUT": 10},
    )
    django.setup()
    try:
        call_command("atpd", *sys.argv[2:])
    except CommandError as exc:  # as manage.py reports it
        sys.exit(f"CommandError: {exc}")


if __name__ == "__main__":
    main()
