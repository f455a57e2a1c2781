"""Dependencies and the canvas (chain, group, chord), run in-process through the tracker."""

import pytest
from django.db import transaction

from atp import tracker, workflows
from atp.daemon.outcomes import record
from atp.daemon.runner import execute
from atp.exceptions import InvalidInput
from atp.models import Dependency, TaskInstance, Workflow
from tests.support.helpers import nothing_written

H = "tests.support.workflow_handlers."


@pytest.fixture
def types(db):
    for name in ("add_one", "square", "total", "results", "fail", "not_json"):
        tracker.register_task_type(f"wf.{name}", H + name, maxrestart=0, max_queue_size=10_000)


def run_all(server_id="test-daemon") -> list[int]:
    """Claim and run every due task in this process until none is left; the ids that ran."""
    ran = []
    while attempts := tracker.claim_tasks(server_id, limit=10):
        for attempt in attempts:
            record(execute(attempt))
            ran.append(attempt.task_id)
    return ran


def status(task_id) -> str:
    return TaskInstance.objects.get(pk=task_id).status_name


def result(task_id):
    return TaskInstance.objects.get(pk=task_id).result


def test_a_json_return_value_is_the_result_and_a_non_json_one_keeps_only_its_repr(types):
    good = tracker.enqueue_task("wf.square", input={"x": 7})
    bad = tracker.enqueue_task("wf.not_json")
    run_all()
    assert (status(good), result(good)) == ("FINISHED", 49)
    assert (status(bad), result(bad)) == ("FINISHED", None)
    succeeded = TaskInstance.objects.get(pk=bad).log.get(event="task-succeeded")
    assert succeeded.fields["result"] == "{1, 2, 3}"


def test_a_chain_passes_each_result_on_and_ends_with_3(types):
    flow = workflows.chain(*(workflows.task("wf.add_one") for _ in range(3)))
    handle = flow.enqueue()
    first, second, third = handle.task_ids
    assert [status(t) for t in handle.task_ids] == ["ACCEPTED", "BLOCKED", "BLOCKED"]
    assert run_all() == [first, second, third]  # one at a time: each released by the last
    assert result(handle.end_task_id) == 3
    assert workflows.workflow_state(handle.workflow_id)["state"] == "succeeded"


def test_a_chord_sums_its_group_and_its_callback_gets_results_in_order(types):
    flow = workflows.chord(
        [workflows.task("wf.square", {"x": x}) for x in range(1, 6)], workflows.task("wf.results")
    )
    handle = flow.enqueue()
    assert len(handle.task_ids) == 6 and handle.end_task_id == handle.task_ids[-1]
    run_all()
    assert result(handle.end_task_id) == [1, 4, 9, 16, 25]
    edges = Dependency.objects.filter(task=handle.end_task_id).order_by("position")
    assert [edge.depends_on_id for edge in edges] == handle.task_ids[:5]


def test_groups_nest_in_chains_and_the_next_step_waits_for_every_member(types):
    flow = workflows.chain(
        workflows.task("wf.add_one", {"start": 10}),
        workflows.group(workflows.task("wf.add_one"), workflows.task("wf.add_one")),
        workflows.task("wf.total"),
    )
    handle = flow.enqueue()
    assert len(handle.task_ids) == 4
    run_all()
    assert result(handle.end_task_id) == 24  # 11 → 12, 12 → 24


def test_a_failure_in_the_middle_revokes_everything_after_it(types):
    handle = workflows.chain(
        workflows.task("wf.add_one"),
        workflows.task("wf.fail"),
        workflows.task("wf.add_one"),
        workflows.task("wf.add_one"),
    ).enqueue()
    run_all()
    assert [status(t) for t in handle.task_ids] == ["FINISHED", "FAILED", "REVOKED", "REVOKED"]
    message = TaskInstance.objects.get(pk=handle.task_ids[2]).log.get(event="task-revoked")
    assert f"(id {handle.task_ids[1]}) ended FAILED" in message.message
    assert workflows.workflow_state(handle.workflow_id)["state"] == "failed"


def test_on_dependency_failure_run_runs_the_next_step_anyway(types):
    handle = workflows.chain(
        workflows.task("wf.fail"), workflows.task("wf.results", on_dependency_failure="run")
    ).enqueue()
    run_all()
    assert [status(t) for t in handle.task_ids] == ["FAILED", "FINISHED"]
    assert result(handle.end_task_id) == [None]


def test_a_workflow_in_a_rolled_back_transaction_leaves_nothing(types):
    with nothing_written():
        with pytest.raises(RuntimeError), transaction.atomic():
            workflows.chord(
                [workflows.task("wf.square", {"x": 1})], workflows.task("wf.total")
            ).enqueue()
            raise RuntimeError("roll back")


def test_depends_on_an_ended_task_applies_the_policy_at_enqueue(types):
    done = tracker.enqueue_task("wf.square", input={"x": 2})
    failed = tracker.enqueue_task("wf.fail")
    run_all()
    released = tracker.enqueue_task("wf.results", depends_on=[done])
    revoked = tracker.enqueue_task("wf.results", depends_on=[done, failed])
    anyway = tracker.enqueue_task(
        "wf.results", depends_on=[failed, done], on_dependency_failure="run"
    )
    assert [status(t) for t in (released, revoked, anyway)] == ["ACCEPTED", "REVOKED", "ACCEPTED"]
    run_all()
    assert result(released) == [4] and result(anyway) == [None, 4]


def test_a_deleted_dependency_counts_as_revoked_for_its_dependents(types):
    first = tracker.enqueue_task("wf.square", input={"x": 2})
    waiting = tracker.enqueue_task("wf.results", depends_on=[first])
    tracker.delete_task(first)
    assert status(waiting) == "BLOCKED"
    assert tracker.decide_orphaned_dependents() == 1
    assert status(waiting) == "REVOKED"


def test_a_blocked_task_is_never_claimed_nor_re_enqueued(types):
    first = tracker.enqueue_task("wf.square", input={"x": 2})
    blocked = tracker.enqueue_task("wf.total", depends_on=[first])
    assert [a.task_id for a in tracker.claim_tasks("d", limit=10)] == [first]
    with pytest.raises(tracker.InvalidTransition):
        tracker.reenqueue_task(blocked)
    tracker.revoke_task(blocked, "no longer wanted")
    assert status(blocked) == "REVOKED"


@pytest.mark.parametrize(
    ("build", "complaint"),
    [
        (lambda: tracker.enqueue_task("wf.total", depends_on=[999999]), "names no task"),
        (lambda: tracker.enqueue_task("wf.total", depends_on=5), "must be a list"),
        (lambda: tracker.enqueue_task("wf.total", depends_on="12"), "must be a list"),
        (
            lambda: tracker.enqueue_task("wf.total", depends_on=[], on_dependency_failure="x"),
            "on_dependency_failure",
        ),
        (lambda: workflows.chord([workflows.task("wf.square")]), "needs a callback"),
        (lambda: workflows.group(), "at least one task"),
        (lambda: workflows.chain(), "at least one task"),
        (lambda: workflows.chain("wf.square"), "takes workflows.task"),
        (lambda: workflows.task("wf.square", on_dependency_failure="ignore"), "revoke"),
    ],
)
def test_bad_input_is_invalid_input_and_writes_nothing(types, build, complaint):
    with nothing_written(), pytest.raises(InvalidInput, match=complaint):
        build()


def test_a_workflow_with_a_bad_member_writes_nothing(types):
    flow = workflows.chain(workflows.task("wf.square"), workflows.task("wf.total", priority="x"))
    with nothing_written(), pytest.raises(InvalidInput):
        flow.enqueue()
    assert not Workflow.objects.exists()


def test_task_sent_names_the_parent_and_root_like_a_celery_chain(types):
    handle = workflows.chain(workflows.task("wf.add_one"), workflows.task("wf.add_one")).enqueue()
    first, second = (TaskInstance.objects.get(pk=t) for t in handle.task_ids)
    sent = second.log.get(event="task-sent").fields
    assert sent["parent_id"] == sent["root_id"] == str(first.uuid)
    assert sent["depends_on"] == [str(first.uuid)]
    assert first.log.get(event="task-sent").fields["root_id"] == str(first.uuid)


# --- admin -----------------------------------------------------------------------------------


def test_the_workflow_page_draws_every_task_and_edge_at_200_tasks(types, superuser_client):
    from django.urls import reverse

    header = [workflows.task("wf.square", {"x": x}) for x in range(199)]
    handle = workflows.chord(header, workflows.task("wf.total")).enqueue()
    page = superuser_client.get(reverse("admin:atp_workflow_change", args=[handle.workflow_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="atp-node"') == 200
    assert html.count('class="atp-edge"') == 199
    assert "running" in html  # the state: nothing ran yet
    # Wrapped columns: the graph stays within a few screens (40 boxes per sub-column).
    from atp.admin.workflow_graph import MAX_ROWS, layout

    tasks = list(TaskInstance.objects.filter(workflow_id=handle.workflow_id))
    edges = list(
        Dependency.objects.filter(task__workflow_id=handle.workflow_id).values_list(
            "task_id", "depends_on_id"
        )
    )
    places = layout(tasks, edges)
    assert len({y for _, y in places.values()}) == MAX_ROWS
    callback_x = places[handle.end_task_id][0]
    assert all(
        x < callback_x for task_id, (x, _) in places.items() if task_id != handle.end_task_id
    )


def test_a_task_page_lists_its_dependencies_and_dependents(types, superuser_client):
    from django.urls import reverse

    handle = workflows.chain(workflows.task("wf.add_one"), workflows.task("wf.add_one")).enqueue()
    first, second = handle.task_ids
    page = superuser_client.get(reverse("admin:atp_taskinstance_change", args=[second]))
    html = page.content.decode()
    assert page.status_code == 200
    assert reverse("admin:atp_taskinstance_change", args=[first]) in html
    assert reverse("admin:atp_workflow_change", args=[handle.workflow_id]) in html
    assert "BLOCKED" in html
    page = superuser_client.get(reverse("admin:atp_taskinstance_change", args=[first]))
    assert reverse("admin:atp_taskinstance_change", args=[second]) in page.content.decode()


def test_the_query_api_shows_a_workflow_as_one_thing(types):
    from atp import query

    handle = workflows.group(workflows.task("wf.square", {"x": 2}), workflows.task("wf.fail"))
    handle = handle.enqueue()
    assert handle.end_task_id is None and handle.end_task_ids == handle.task_ids
    before = query.get_workflow(handle.workflow_id)
    assert (before["state"], before["total"], before["ended"]) == ("running", 2, 0)
    run_all()
    after = query.get_workflow(handle.workflow_id)
    assert (after["state"], after["progress"]) == ("failed", 1.0)
    assert after["counts"] == {"FINISHED": 1, "FAILED": 1}
    with pytest.raises(tracker.TaskNotFound):
        query.get_workflow(987654)
