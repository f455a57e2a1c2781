"""Every ATP setting is validated by a system check (atp.conf's table of rules)."""

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from django.core import checks
from django.db import connection
from django.test import override_settings

from atp import setting_rules
from atp.checks import settings_errors, settings_problems
from atp.conf import RULES, Defaults
from atp.daemon.engine import MAX_BACKOFF

REPO = Path(__file__).resolve().parents[2]


def problems(**atp) -> list[tuple[str, str]]:
    with override_settings(ATP=atp):
        return [(problem.id, problem.msg) for problem in settings_problems()]


def test_every_setting_has_a_rule_its_default_passes():
    assert set(RULES) == {f.name for f in fields(Defaults)}
    for name, rule in RULES.items():
        assert rule is not None, f"{name} has no rule: declare it as setting(default, rule)"
        assert rule(getattr(Defaults, name)) is None, name
    assert problems() == []


BAD = [
    ("MAX_QUEUE_SIZE", 0),
    ("MAX_QUEUE_SIZE", "64"),
    ("POLL_INTERVAL", "fast"),
    ("POLL_INTERVAL", 0),
    ("POLL_INTERVAL", float("nan")),
    ("CLEANUP_EVERY", 1.5),
    ("CLAIM_TIMEOUT", -1),
    ("HEARTBEAT_INTERVAL", None),
    ("WORKER_TIMEOUT", -5),
    ("WORKER_TIMEOUT", True),
    ("EVENTS_BROKER_URL", "http://127.0.0.1/"),
    ("EVENTS_BROKER_URL", 6379),
    ("JOB_ROOT", ""),
    ("CONCURRENCY", 0),
    ("PREFETCH", -3),
    ("CLEANUP_BATCH_SIZE", -1),
    ("CLEANUP_BATCH_SIZE", 0),
    ("LISTEN_DATABASE", "direct"),
    ("LISTEN_DATABASE", ""),
    ("LISTEN_DATABASE", 5432),
]


@pytest.mark.parametrize("name, value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_a_bad_value_is_an_error_naming_the_setting_and_the_value(name, value):
    found = problems(**{name: value})
    assert found and found[0][0] == "atp.E002", found
    assert found[0][1].startswith(f"ATP[{name!r}] must be ")
    assert found[0][1].endswith(f", not {value!r}.")


GOOD = [
    ("MAX_QUEUE_SIZE", None),
    ("POLL_INTERVAL", 0.05),
    ("CONCURRENCY", None),
    ("EVENTS_BROKER_URL", None),
    ("EVENTS_BROKER_URL", "redis://127.0.0.1:6379/0"),
    ("EVENTS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    ("JOB_ROOT", Path("/tmp/jobs")),  # noqa: S108
]


@pytest.mark.parametrize("name, value", GOOD, ids=[f"{n}={v!r}" for n, v in GOOD])
def test_good_values_pass(name, value):
    assert problems(**{name: value}) == []


def test_listen_database_must_name_a_postgresql_database():
    found = problems(LISTEN_DATABASE="direct")
    assert "(known: ['default'])" in found[0][1]
    on_postgres = connection.vendor == "postgresql"
    found = problems(LISTEN_DATABASE="default")
    assert found == [] if on_postgres else "must name a PostgreSQL database" in found[0][1]


def test_the_heartbeat_must_be_shorter_than_the_worker_timeout():
    found = problems(HEARTBEAT_INTERVAL=5, WORKER_TIMEOUT=5)
    assert [problem_id for problem_id, _ in found] == ["atp.E003"]
    assert (
        "ATP['HEARTBEAT_INTERVAL'] (5) must be smaller than ATP['WORKER_TIMEOUT'] (5)"
        in (found[0][1])
    )


def test_a_worker_timeout_within_the_database_retry_pause_is_a_warning():
    timeout = 1 + MAX_BACKOFF - 0.5
    found = problems(HEARTBEAT_INTERVAL=1, WORKER_TIMEOUT=timeout)
    assert [problem_id for problem_id, _ in found] == ["atp.W002"]
    with override_settings(ATP={"HEARTBEAT_INTERVAL": 1, "WORKER_TIMEOUT": timeout}):
        assert settings_errors() == []  # a warning does not stop atpd
    assert problems(HEARTBEAT_INTERVAL=1, WORKER_TIMEOUT=1 + MAX_BACKOFF) == []


def test_unknown_keys_and_a_non_dict_are_errors():
    assert problems(POLL_INTERVALL=1)[0][0] == "atp.E001"
    with override_settings(ATP=[("POLL_INTERVAL", 1)]):
        assert [problem.id for problem in settings_problems()] == ["atp.E001"]


@pytest.mark.parametrize(
    "url, missing, extra",
    [("redis://127.0.0.1:6379/0", "packaging", "redis"), ("amqp://127.0.0.1//", "amqp", "amqp")],
)
def test_a_broker_whose_client_library_is_missing_names_the_extra(monkeypatch, url, missing, extra):
    real = setting_rules.find_spec
    monkeypatch.setattr(
        setting_rules, "find_spec", lambda name: None if name == missing else real(name)
    )
    ((problem_id, message),) = problems(EVENTS_BROKER_URL=url)
    assert problem_id == "atp.E002"
    assert f"needs the module(s) {missing}" in message
    assert f"pip install 'django-atp[{extra}]'" in message


def test_the_settings_check_is_registered():
    with override_settings(ATP={"CLEANUP_BATCH_SIZE": -1}):
        ids = [message.id for message in checks.run_checks()]
    assert "atp.E002" in ids


def manage_check(variant: str) -> subprocess.CompletedProcess:
    """``manage.py check`` in a fresh interpreter, with tests/support/check_settings.py."""
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--settings", "tests.support.check_settings"],
        cwd=REPO,
        env={**_environ(), "ATP_CHECK_VARIANT": variant},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _environ() -> dict:
    import os

    return {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}


def test_manage_py_check_shows_the_sqlite_warning():
    done = manage_check("sqlite-defaults")
    assert done.returncode == 0, done.stderr
    assert "atp.W001" in done.stdout + done.stderr
    assert "transaction_mode" in done.stdout + done.stderr


def test_manage_py_check_reports_bad_task_backend_options():
    """On Django 6 the backend checks run only if django.tasks was imported: ATP imports it."""
    done = manage_check("bad-backend-options")
    assert done.returncode == 1
    assert "atp.E103" in done.stderr and "colour" in done.stderr


def test_manage_py_check_reports_bad_atp_settings():
    done = manage_check("bad-atp-settings")
    assert done.returncode == 1
    assert "ATP['POLL_INTERVAL'] must be a number greater than 0, not 'fast'" in done.stderr


def test_manage_py_check_warns_about_session_features_behind_a_pooler():
    done = manage_check("pooled-default")
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "atp.W003" in output and "DISABLE_SERVER_SIDE_CURSORS" in output
    assert "atp.W004" in output and "prepare_threshold" in output
    assert "atp.E002" not in output  # 'direct' is a PostgreSQL alias


def test_the_pooler_warnings_need_listen_database_on_postgresql(settings, monkeypatch):
    from atp.checks import check_pooled_default

    assert check_pooled_default() == []  # no LISTEN_DATABASE: nothing is said
    settings.ATP = {"LISTEN_DATABASE": "default"}
    on_postgres = connection.vendor == "postgresql"
    assert [warning.id for warning in check_pooled_default()] == (
        ["atp.W003"] if on_postgres else []
    )
    monkeypatch.setitem(settings.DATABASES["default"], "DISABLE_SERVER_SIDE_CURSORS", True)
    assert check_pooled_default() == []
