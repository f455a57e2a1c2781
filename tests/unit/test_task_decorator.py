"""``@task``: declaring, binding, enqueueing, handles, results (run in-process by drain)."""

import json

import pytest
from django.core import checks

from atp import control, discovery, query, task, tracker
from atp.decorators import Task, TaskHandle
from atp.exceptions import InvalidInput, TaskFailed
from atp.models import LogRecord, Status, TaskInstance, TaskType
from atp.testing import drain
from tests.taskapp import tasks

pytestmark = pytest.mark.django_db


def test_both_forms_make_a_task_named_after_the_function():
    assert isinstance(tasks.add, Task)
    assert tasks.add.name == "tests.taskapp.tasks.add"
    assert tasks.resize.name == "taskapp.resize"
    assert tasks.add.handler == "tests.taskapp.tasks.add"
    assert tasks.add(2, b=3) == 5  # calling it runs the function here


def test_enqueue_stores_args_and_kwargs_as_celery_shows_them():
    handle = tasks.resize.enqueue("a.jpg", width=320)

    task = TaskInstance.objects.get(pk=handle.id)
    assert task.input == {"args": ["a.jpg"], "kwargs": {"width": 320}}
    sent = LogRecord.objects.get(instance=task, event="task-sent").fields
    assert (sent["args"], sent["kwargs"]) == ("('a.jpg',)", "{'width': 320}")
    info = query.as_dict(query.get_task_by_id(handle.id))
    assert (info["args"], info["kwargs"], info["name"]) == (
        "('a.jpg',)",
        "{'width': 320}",
        "taskapp.resize",
    )
    assert handle.uuid == str(task.uuid)
    assert handle.status == "PENDING"
    assert handle.result is None


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((), {}, "missing a required argument: 'path'"),
        (("a.jpg",), {"height": 3}, "unexpected keyword argument 'height'"),
        (("a.jpg", 1, 2), {}, "too many positional arguments"),
    ],
)
def test_arguments_that_do_not_bind_are_refused_at_enqueue(args, kwargs, says):
    with pytest.raises(InvalidInput, match=says) as raised:
        tasks.resize.enqueue(*args, **kwargs)
    assert "taskapp.resize" in str(raised.value)
    assert not TaskInstance.objects.exists()


def test_arguments_json_cannot_hold_are_refused_at_enqueue():
    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        tasks.resize.enqueue("a.jpg", width={1, 2})
    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        tasks.add.enqueue(float("nan"))
    assert not TaskInstance.objects.exists()


def test_takes_status_binds_without_the_status_argument():
    with pytest.raises(InvalidInput, match=r"report\(steps: int\)"):
        tasks.report.enqueue()
    handle = tasks.report.enqueue(3)
    assert drain() == [handle.id]
    assert handle.result == handle.id  # the handler got its own TaskStatus first
    assert TaskInstance.objects.get(pk=handle.id).progress["done"] == 3


def test_using_sets_enqueue_options_for_one_call_only():
    later = tasks.add.using(priority=7, queue="other", countdown=600, expires=3600).enqueue(1)
    plain = tasks.add.enqueue(2)

    task = TaskInstance.objects.get(pk=later.id)
    assert (task.priority, task.queue) == (7, "other")
    assert task.run_after > task.enqueued_at
    assert task.expires is not None
    other = TaskInstance.objects.get(pk=plain.id)
    assert (other.priority, other.queue, other.expires) == (0, "default", None)
    assert tasks.add.using(identifier="one").enqueue(3).id
    assert TaskInstance.objects.get(identifier="one").input == {"args": [3], "kwargs": {}}


def test_the_return_value_is_the_result_and_wait_returns_it():
    handle = tasks.add.enqueue(2, b=40)
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.05)
    assert drain() == [handle.id]
    assert handle.status == "SUCCESS"
    assert handle.result == 42
    assert handle.wait(timeout=1) == 42
    assert TaskInstance.objects.get(pk=handle.id).result == 42
    assert control.get_result(handle.id).result == 42


def test_wait_raises_when_the_task_failed():
    handle = tasks.fail.enqueue("no luck")
    drain()
    assert handle.status == "FAILURE"
    with pytest.raises(TaskFailed, match="ValueError: no luck"):
        handle.wait(timeout=1)


def test_a_return_value_json_cannot_hold_fails_the_task():
    handle = tasks.unjsonable.enqueue()
    drain()
    assert handle.status == "FAILURE"
    assert "ReturnValueNotJSON" in control.get_result(handle.id).exception


def test_an_async_task_runs_in_process_too():
    handle = tasks.async_add.enqueue(1, b=2)
    assert drain() == [handle.id]
    assert handle.result == 3


def test_a_plain_handlers_json_return_value_is_its_result_too():
    tracker.register_task_type("test.echo", "tests.support.handlers.echo")
    task_id = tracker.enqueue_task("test.echo", None, {"n": [1, 2]})
    drain()
    assert TaskInstance.objects.get(pk=task_id).result == {"n": [1, 2]}


def test_a_task_must_be_a_module_level_function():
    def local(x):
        return x

    with pytest.raises(InvalidInput, match="module-level function"):
        task(local)


def test_bad_type_options_are_refused_where_the_task_is_declared():
    with pytest.raises(InvalidInput, match="unknown option"):
        task(name="bad.options", colour="blue")(tasks.add.func)
    with pytest.raises(InvalidInput, match="max_retries"):
        task(name="bad.retries", max_retries=-1)(tasks.add.func)


def test_the_first_enqueue_creates_the_type_with_the_decorators_options():
    discovery.forget_synced()
    handle = tasks.resize.enqueue("x.png")
    kind = TaskType.objects.get(identifier="taskapp.resize")
    assert (kind.handler, kind.timeout, kind.max_retries) == ("tests.taskapp.tasks.resize", 600, 0)
    assert TaskInstance.objects.get(pk=handle.id).type == kind


def test_sync_updates_what_the_decorator_says_and_keeps_run_time_changes():
    discovery.sync_task_types()
    control.rate_limit("taskapp.resize", "5/m")  # an operator's change
    TaskType.objects.filter(identifier="taskapp.resize").update(timeout=1, handler="gone.module.fn")

    discovery.sync_task_types()

    kind = TaskType.objects.get(identifier="taskapp.resize")
    assert (kind.timeout, kind.handler) == (600, "tests.taskapp.tasks.resize")
    assert kind.rate_limit == "5/m"


def test_an_enqueue_after_the_type_was_deleted_creates_it_again():
    tasks.add.enqueue(1)
    TaskInstance.objects.all().delete()
    TaskType.objects.filter(identifier=tasks.add.name).delete()
    handle = tasks.add.enqueue(2)
    assert TaskInstance.objects.get(pk=handle.id).type.identifier == tasks.add.name


def test_handles_are_plain_values():
    handle = tasks.add.enqueue(1)
    assert handle == TaskHandle(handle.id)
    assert not handle.ready
    assert [e.id for e in checks.run_checks() if e.id.startswith("atp.")] == []
    assert Status.ACCEPTED == TaskInstance.objects.get(pk=handle.id).status


def test_finish_tasks_stores_each_result_in_one_batch():
    handles = [tasks.add.enqueue(n) for n in range(3)]
    attempts = tracker.claim_tasks("server-1", limit=3)
    done = tracker.finish_tasks(
        [(a.task_id, a.number, repr(a.task_id), json.dumps({"id": a.task_id})) for a in attempts]
    )
    assert set(done.values()) == {"finished"}
    assert [handle.result for handle in handles] == [{"id": handle.id} for handle in handles]


def test_a_task_stored_with_a_plain_json_object_gets_it_as_keyword_arguments():
    from atp import examples

    examples.register_examples()
    task_id = tracker.enqueue_task("example.add", None, {"a": 2, "b": 20})  # as before @task
    assert drain() == [task_id]
    assert TaskInstance.objects.get(pk=task_id).result == 22


def test_using_takes_a_unique_key_dependencies_and_refuses_unknown_options():
    from atp.exceptions import DuplicateTask

    first = tasks.add.using(unique_key="order-1").enqueue(1, b=1)
    assert tasks.add.using(unique_key="order-1").enqueue(2) == first  # the key's holder
    assert TaskInstance.objects.count() == 1
    mine = tasks.add.using(identifier="mine").enqueue(3)
    with pytest.raises(DuplicateTask):
        tasks.add.using(identifier="mine").enqueue(4)
    with pytest.raises(InvalidInput, match="unknown enqueue option"):
        tasks.add.using(colour="blue")
    after = tasks.add.using(depends_on=[first]).enqueue(first.id)  # a handle or an id
    assert TaskInstance.objects.get(pk=after.id).status == Status.BLOCKED  # waits for first
    assert drain() == [first.id, mine.id, after.id]
    assert after.result == first.id
