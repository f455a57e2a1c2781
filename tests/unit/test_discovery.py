"""Autodiscovery of installed apps' tasks, type sync, and the system checks on them."""

import sys
import types

import pytest
from django.core import checks

from atp import discovery, task
from atp.checks import check_duplicate_task_names, check_stale_task_types
from atp.models import TaskInstance, TaskType

pytestmark = pytest.mark.django_db


def test_autodiscovery_finds_the_tasks_module_of_installed_apps():
    found = discovery.registered()
    assert found["taskapp.resize"].handler == "tests.taskapp.tasks.resize"
    assert "tests.taskapp.tasks.async_add" in found


def test_sync_creates_every_discovered_type_without_any_enqueue():
    assert not TaskType.objects.exists()
    discovery.sync_task_types()
    names = set(TaskType.objects.values_list("identifier", flat=True))
    assert {"taskapp.resize", "tests.taskapp.tasks.add", "tests.taskapp.tasks.async_add"} <= names
    assert discovery.sync_task_types() == []  # nothing changed: nothing written


def test_a_type_whose_handler_disappeared_is_reported_never_deleted():
    discovery.sync_task_types()
    TaskType.objects.create(identifier="old.resize", handler="tests.taskapp.tasks.renamed_away")
    kind = TaskType.objects.get(identifier="old.resize")
    TaskInstance.objects.create(type=kind, identifier="kept", status=1)

    found = check_stale_task_types(databases=["default"])
    discovery.sync_task_types()

    assert [(error.id, "old.resize" in error.msg) for error in found] == [("atp.W110", True)]
    assert "tests.taskapp.tasks.renamed_away" in found[0].msg
    assert TaskType.objects.filter(identifier="old.resize").exists()
    assert TaskInstance.objects.filter(identifier="kept").exists()
    assert check_stale_task_types(databases=None) == []  # only with database checks


def _module_with_task(module_name: str, name: str):
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module
    exec(  # noqa: S102 - a fixed snippet: a task declared in a module of its own
        f"from atp import task\n@task(name={name!r})\ndef job(x):\n    return x\n",
        module.__dict__,
    )
    return module


def test_two_tasks_with_one_name_are_a_system_check_error():
    first = _module_with_task("tests_dup_one", "dup.name")
    second = _module_with_task("tests_dup_two", "dup.name")
    try:
        errors = check_duplicate_task_names()
        assert [error.id for error in errors] == ["atp.E110"]
        assert "tests_dup_one.job" in errors[0].msg and "tests_dup_two.job" in errors[0].msg
        assert checks.Error in {type(error) for error in errors}
        with pytest.raises(Exception, match="two tasks are named 'dup.name'"):
            first.job.enqueue(1)
        assert discovery.registered()["dup.name"].handler == "tests_dup_one.job"
        assert second.job.name == "dup.name"
    finally:
        discovery.forget("dup.name")
        del sys.modules["tests_dup_one"], sys.modules["tests_dup_two"]
    assert check_duplicate_task_names() == []


def test_declaring_the_same_function_again_is_not_a_clash():
    again = task(name="taskapp.resize", max_retries=0, timeout=600)(
        discovery.registered()["taskapp.resize"].func
    )
    assert again.handler == "tests.taskapp.tasks.resize"
    assert check_duplicate_task_names() == []
