"""Settings of the host project that runs and tests ATP (not shipped with the app).

The database is an SQLite file under ``var/`` unless ``DATABASE_URL`` names another one,
for example ``DATABASE_URL=postgres://postgres@127.0.0.1:5432/atp``.
"""

import json
import os
from importlib.util import find_spec
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ATP_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "atp-development-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "atp",
]
if find_spec("django.tasks") is None:
    # Django < 6: the django-tasks backport is an app (its system checks and its
    # setting_changed receiver, which override_settings(TASKS=...) needs).
    INSTALLED_APPS.append("django_tasks")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "settings.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'atp.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers run beside the one writer; IMMEDIATE makes every transaction
        # take the write lock up front, so a claim never fails half-way on a lock upgrade;
        # the timeout lets writers queue for the lock instead of failing at once.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file (not :memory:) so that daemons started by the tests can share it.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("ATP_TEST_SQLITE", str(VAR_DIR / "test_atp.sqlite3"))
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"

# ATP's settings (README "Settings"); the tests and benchmarks pass overrides to the
# daemons they start as JSON in ATP_SETTINGS, e.g. ATP_SETTINGS='{"WORKER_TIMEOUT": 3}'.
ATP = json.loads(os.environ.get("ATP_SETTINGS", "{}"))

# Behind PgBouncer in transaction mode (DATABASE_URL names the pooler), LISTEN needs a
# direct connection of its own: LISTEN_DATABASE_URL names it (README "Behind PgBouncer").
if os.environ.get("LISTEN_DATABASE_URL"):
    DATABASES["listen"] = dj_database_url.parse(os.environ["LISTEN_DATABASE_URL"])
    DATABASES["listen"]["TEST"] = {"MIRROR": "default"}  # the test database, not one of its own
    ATP.setdefault("LISTEN_DATABASE", "listen")

# Django's tasks framework runs on ATP (atp/backends.py); "other" lets tests route by queue.
TASKS = {
    "default": {
        "BACKEND": "atp.backends.ATPBackend",
        "QUEUES": ["default", "other"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"atp": {"handlers": ["console"], "level": os.environ.get("ATP_LOG_LEVEL", "INFO")}},
}
