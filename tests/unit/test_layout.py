"""The layout keeps every documented import path and every handler path stored in databases."""

import importlib

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "atp.daemon.Daemon",  # from atp.daemon import Daemon, WorkerOptions, POOLS
        "atp.daemon.WorkerOptions",
        "atp.daemon.POOLS",
        "atp.search.search_q",  # README: the Q of a search in your own QuerySets
        "atp.subtasks.get_progress",  # README: a parent's progress
        "atp.backends.ATPBackend",  # settings: TASKS = {"default": {"BACKEND": ...}}
        "atp.django_tasks_handler.run",  # stored as TaskType.handler
        "atp.jobs.run_job",  # stored as TaskType.handler
        "atp.urls.urlpatterns",  # include("atp.urls")
    ],
)
def test_documented_and_stored_paths_still_import(path):
    module, name = path.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is not None


def test_old_paths_are_the_same_objects_as_the_new_ones():
    from atp import search, subtasks
    from atp.daemon import Daemon, engine
    from atp.query import search as query_search
    from atp.tracker import subtasks as tracker_subtasks

    assert search.search_q is query_search.search_q
    assert subtasks.get_progress is tracker_subtasks.get_progress
    assert Daemon is engine.Daemon


def test_an_unknown_name_of_atp_daemon_is_an_attribute_error():
    import atp.daemon

    with pytest.raises(AttributeError, match="no attribute 'Deamon'"):
        atp.daemon.Deamon  # noqa: B018
