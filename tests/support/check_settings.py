"""Settings for ``manage.py check`` tests (tests/unit/test_settings_checks.py).

The host settings with one mistake, chosen by ``ATP_CHECK_VARIANT``:

- ``sqlite-defaults``: SQLite with Django's default options (no IMMEDIATE transactions);
- ``bad-backend-options``: ATPBackend with an unknown type option;
- ``bad-atp-settings``: a malformed ``settings.ATP`` value;
- ``pooled-default``: "default" behind a transaction pooler (``LISTEN_DATABASE`` set) with
  server-side cursors and psycopg 3's prepared statements left on.
"""

import os

from settings import *  # noqa: F403
from settings import VAR_DIR

VARIANT = os.environ["ATP_CHECK_VARIANT"]

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "check.sqlite3")}
}
if VARIANT != "sqlite-defaults":
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE"}
if VARIANT == "bad-backend-options":
    TASKS = {"default": {"BACKEND": "atp.backends.ATPBackend", "OPTIONS": {"colour": "red"}}}
if VARIANT == "bad-atp-settings":
    ATP = {"POLL_INTERVAL": "fast"}
if VARIANT == "pooled-default":
    # Never connected to: ``manage.py check`` runs no database checks without --database.
    pooled = {"ENGINE": "django.db.backends.postgresql", "NAME": "atp", "PORT": "6432"}
    pooled["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
    DATABASES = {"default": pooled, "direct": {**pooled, "PORT": "5432", "OPTIONS": {}}}
    ATP = {"LISTEN_DATABASE": "direct"}
