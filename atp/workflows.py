"""Workflows: chains, groups and chords of tasks, written in one transaction.

A workflow is ordinary tasks plus dependency rows (``atp.tracker.dependencies``): a chain's
step depends on the step before it, a chord's callback on every task of its group. Nothing
lives outside the database, so a daemon's crash or restart costs a workflow no more than
it costs any task: the dependent is released in the transaction that ends its last
dependency, exactly once.

::

    from atp import workflows

    flow = workflows.chord([workflows.task("square", {"x": x}) for x in range(50)],
                           workflows.task("total"))
    handle = flow.enqueue()      # all 51 tasks or none
    handle.end_task_id           # the callback: its result is the workflow's result

A task reads its dependencies' results with ``task_status.dependency_results()``, in the
order its dependencies were given (a chain step: ``[previous result]``; a chord's
callback: one result per group member, in the group's order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

from django.db import transaction

from atp import tracker
from atp.exceptions import InvalidInput
from atp.models import TaskInstance, Workflow
from atp.query.workflows import workflow_state
from atp.tracker import dependencies

#: Options of ``task()`` that are not ``enqueue_task`` options.
_OWN_OPTIONS = ("identifier",)


@dataclass(frozen=True)
class Signature:
    """One task to enqueue: its type, input and ``enqueue_task`` options."""

    type: str
    input: object = None
    options: dict = field(default_factory=dict)

    def enqueue(self, name: str = "") -> WorkflowHandle:
        """Enqueue this one task as a workflow of one."""
        return _enqueue(self, name)


@dataclass(frozen=True)
class Chain:
    """Steps run one after the other; each step depends on the end of the one before."""

    steps: tuple

    def enqueue(self, name: str = "") -> WorkflowHandle:
        """Write the whole chain in one transaction and return its handle."""
        return _enqueue(self, name or "chain")


@dataclass(frozen=True)
class Group:
    """Members run side by side; what follows a group depends on all of its members."""

    members: tuple

    def enqueue(self, name: str = "") -> WorkflowHandle:
        """Write the whole group in one transaction and return its handle."""
        return _enqueue(self, name or "group")


@dataclass(frozen=True)
class Chord:
    """A group, then a callback that depends on every member of the group."""

    header: Group
    callback: object

    def enqueue(self, name: str = "") -> WorkflowHandle:
        """Write the group and its callback in one transaction and return the handle."""
        return _enqueue(self, name or "chord")


@dataclass(frozen=True)
class WorkflowHandle:
    """What ``enqueue()`` wrote: the workflow row, every task id, and where it ends.

    ``task_ids`` lists every task in the order the signatures were given, depth first.
    ``end_task_ids`` are the tasks whose end is the workflow's end (one for a chain or a
    chord; a group's members); ``end_task_id`` is the single one, or None for a group.
    """

    workflow_id: int
    task_ids: list[int]
    end_task_ids: list[int]

    @property
    def end_task_id(self) -> int | None:
        """The task whose end is the workflow's end, when there is exactly one."""
        return self.end_task_ids[0] if len(self.end_task_ids) == 1 else None

    def state(self) -> dict:
        """The workflow's state now (see ``workflow_state``)."""
        return workflow_state(self.workflow_id)


def task(type, input=None, **enqueue_options) -> Signature:
    """A signature: a task of ``type`` with ``input`` and ``enqueue_task``'s options.

    ``identifier`` and ``on_dependency_failure`` ("revoke" or "run") are accepted too;
    ``depends_on`` adds dependencies on tasks outside the workflow.
    """
    where = f"workflow task of type {type!r}"
    unknown = set(enqueue_options) - set(tracker.ENQUEUE_OPTIONS) - set(_OWN_OPTIONS)
    unknown |= {"workflow"} & set(enqueue_options)
    if unknown:
        raise InvalidInput(f"unknown option(s) {sorted(unknown)} for {where}")
    dependencies.clean(
        enqueue_options.get("depends_on"), enqueue_options.get("on_dependency_failure"), where
    )
    return Signature(str(type), input, dict(enqueue_options))


def chain(*steps) -> Chain:
    """Run ``steps`` (signatures, groups, chains, chords) one after the other."""
    return Chain(_nodes(steps, "chain"))


def group(*members) -> Group:
    """Run ``members`` side by side; ``group([s1, s2])`` and ``group(s1, s2)`` both work."""
    if len(members) == 1 and isinstance(members[0], (list, tuple)):
        members = tuple(members[0])
    return Group(_nodes(members, "group"))


def chord(header, callback=None) -> Chord:
    """Run ``header`` (a group, or a list of members), then ``callback`` after all of them."""
    if callback is None:
        raise InvalidInput("a chord needs a callback: chord([...], callback)")
    header = header if isinstance(header, Group) else group(*header)
    return Chord(header, _nodes([callback], "chord callback")[0])


# --- writing -------------------------------------------------------------------------------


def _nodes(items, what) -> tuple:
    items = tuple(items)
    if not items:
        raise InvalidInput(f"a {what} needs at least one task")
    for item in items:
        if not isinstance(item, (Signature, Chain, Group, Chord)):
            raise InvalidInput(
                f"a {what} takes workflows.task(...), chain, group or chord, not {item!r}"
            )
    return items


def _enqueue(node, name: str) -> WorkflowHandle:
    with transaction.atomic():
        workflow = Workflow.objects.create(name=name[:255])
        workflow.root_uuid = None  # type: ignore[attr-defined]  # set by the first task written: Celery's root_id
        ids, ends = _write(node, [], workflow)
        workflow.end_task_id = ends[0] if len(ends) == 1 else None
        workflow.save(update_fields=["end_task"])
    return WorkflowHandle(workflow.pk, ids, ends)


def _write(node, after: list[int], workflow) -> tuple[list[int], list[int]]:
    """Enqueue ``node`` to run after the tasks ``after``; return (its ids, its end ids)."""
    if isinstance(node, Signature):
        ids = _write_signatures([node], after, workflow)
        return ids, ids
    if isinstance(node, Chain):
        ids = []
        for step in node.steps:
            step_ids, after = _write(step, after, workflow)
            ids += step_ids
        return ids, after
    if isinstance(node, Group):
        ids, ends = [], []
        # Runs of plain signatures of one type and options are one bulk enqueue.
        for plain, run in groupby(node.members, key=_batch_key):
            members = list(run)
            if plain is None:
                for member in members:
                    member_ids, member_ends = _write(member, after, workflow)
                    ids += member_ids
                    ends += member_ends
            else:
                batch_ids = _write_signatures(members, after, workflow)
                ids += batch_ids
                ends += batch_ids
        return ids, ends
    header_ids, header_ends = _write(node.header, after, workflow)
    callback_ids, callback_ends = _write(node.callback, header_ends, workflow)
    return header_ids + callback_ids, callback_ends


def _batch_key(node):
    """Signatures that can share one bulk enqueue have the same key; others None."""
    if not isinstance(node, Signature) or "depends_on" in node.options:
        return None
    options = {k: v for k, v in node.options.items() if k not in _OWN_OPTIONS}
    return (node.type, repr(sorted(options.items())))


def _write_signatures(signatures, after, workflow) -> list[int]:
    first = signatures[0]
    options = {k: v for k, v in first.options.items() if k not in _OWN_OPTIONS}
    options["depends_on"] = list(after) + list(options.get("depends_on") or [])
    options["workflow"] = workflow
    items = [(s.options.get("identifier"), s.input) for s in signatures]
    ids = tracker.enqueue_tasks(first.type, items, **options)
    if workflow.root_uuid is None:
        workflow.root_uuid = TaskInstance.objects.values_list("uuid", flat=True).get(pk=ids[0])
    return ids
