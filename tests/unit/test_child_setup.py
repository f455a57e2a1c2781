"""The pool's children get the daemon's settings (atp.daemon.child_setup), or a clear refusal."""

import importlib
import os
import pickle
import sys

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from atp.daemon import child_setup


def test_settings_from_a_module_travel_as_its_name(monkeypatch):
    monkeypatch.setenv(child_setup.SETTINGS_FILE_ENV, "/nonexistent/left-over")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "not.the.one.in.use")
    assert child_setup.export_settings() is None
    assert os.environ["DJANGO_SETTINGS_MODULE"] == django_settings.SETTINGS_MODULE  # in use
    assert child_setup.SETTINGS_FILE_ENV not in os.environ


def test_overridden_settings_travel_whole_in_a_private_file(settings, monkeypatch):
    monkeypatch.delenv(child_setup.SETTINGS_FILE_ENV, raising=False)
    settings.ATP = {"POLL_INTERVAL": 0.3}
    path = child_setup.export_settings()
    try:
        assert os.environ[child_setup.SETTINGS_FILE_ENV] == path
        assert os.stat(path).st_mode & 0o077 == 0  # readable by this user only
        with open(path, "rb") as file:
            values = pickle.load(file)  # noqa: S301 (the file this test just made)
        assert values["ATP"] == {"POLL_INTERVAL": 0.3}
        assert "atp" in values["INSTALLED_APPS"]  # the module's values come along
    finally:
        os.unlink(path)


def test_settings_that_cannot_be_pickled_are_refused_with_a_clear_error(settings):
    settings.ATP_TEST_CALLBACK = lambda: None
    with pytest.raises(child_setup.ChildSettingsError, match="use a settings module"):
        child_setup.export_settings()


def test_the_broker_links_name_the_extra_when_celery_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)  # what an absent package looks like
    monkeypatch.delitem(sys.modules, "atp.daemon.broker", raising=False)
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'django-atp\[redis\]'"):
        importlib.import_module("atp.daemon.broker")
    monkeypatch.delitem(sys.modules, "atp.daemon.broker", raising=False)


@pytest.mark.django_db
def test_state_from_events_names_the_extra_when_celery_is_missing(monkeypatch):
    from atp import events

    monkeypatch.setitem(sys.modules, "celery.events.state", None)
    with pytest.raises(ImproperlyConfigured, match=r"django-atp\[redis\]"):
        events.state_from_events()
