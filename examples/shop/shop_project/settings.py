"""Settings of the shop example: SQLite under ``var/`` unless ``DATABASE_URL`` says otherwise."""

import os
from importlib.util import find_spec
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)

SECRET_KEY = "shop-example-not-secret"  # noqa: S105 - an example project, never deployed
DEBUG = False
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "atp", "shop"]
if find_spec("django.tasks") is None:
    INSTALLED_APPS.append("django_tasks")  # Django 5.2: the tasks framework's backport

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'shop.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}
    # A file, so the daemon the tests start sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_shop.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
ATP = {"MAX_QUEUE_SIZE": None}
