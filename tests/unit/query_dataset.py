"""A small, fixed task history built with the factories, for the query and search tests.

Each task gets the rows the tracker would have written: the TaskInstance with its times,
a ``task-sent`` record (args/kwargs reprs, lineage) and, once it ended, its outcome record.
"""

from datetime import UTC, datetime, timedelta

from atp import events
from atp.models import Status
from tests.support.factories import (
    LogRecordFactory,
    TaskInstanceFactory,
    TaskTypeFactory,
    WorkerFactory,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def minutes(n, seconds=0):
    """The moment ``n`` minutes (and ``seconds``) after T0."""
    return T0 + timedelta(minutes=n, seconds=seconds)


#: identifier -> (type, status, input, server_id, received minute, runtime s, outcome fields)
TASKS = {
    "resize-1": (
        "img.resize",
        Status.FINISHED,
        {"path": "/data/alpha.tif", "width": 640},
        "0xAAA",
        1,
        10,
        {"result": "{'size': 1234}"},
    ),
    "resize-2": (
        "img.resize",
        Status.FAILED,
        {"path": "/data/beta.tif", "width": 320},
        "0xBBB",
        2,
        3,
        {"exception": "OSError: disk full", "traceback": "Traceback...\nOSError: disk full"},
    ),
    "resize-3": (
        "img.resize",
        Status.ACCEPTED,
        {"path": "/data/gamma.tif", "width": 640},
        "",
        None,
        None,
        None,
    ),
    "thumb-1": ("img.thumbnail", Status.RUNNING, ["/data/alpha.tif", 64], "0xAAA", 3, None, None),
    "thumb-2": (
        "img.thumbnail",
        Status.FINISHED,
        ["/data/delta.png", 128],
        "0xCCC",
        4,
        30,
        {"result": "'ok'"},
    ),
    "mail-1": (
        "mail.send",
        Status.REVOKED,
        {"to": "ops@example.org", "urgent": True},
        "",
        None,
        None,
        {"terminated": False, "signum": None, "expired": True},
    ),
    "mail-2": (
        "mail.send",
        Status.FINISHED,
        {"to": "dev@example.org", "urgent": False, "retries": 5},
        "0xBBB",
        5,
        1,
        {"result": "True"},
    ),
    "mail-3": (
        "mail.send",
        Status.PAUSED,
        {"to": "ops@example.org", "count": 5},
        "0xCCC",
        6,
        None,
        None,
    ),
    "mail-4": ("mail.send", Status.SCHEDULED, "hello world", "0xAAA", 7, None, None),
    "thumb-3": (
        "img.thumbnail",
        Status.FINISHED,
        ["/data/alpha.tif", 32],
        "0xAAA",
        8,
        2,
        {"result": "'small'"},
    ),
}
PARENTS = {"thumb-3": "resize-1"}
STARTED = {Status.RUNNING, Status.PAUSED, Status.FINISHED, Status.FAILED}


def build():
    """Create the data set; return {identifier: TaskInstance}."""
    WorkerFactory(server_id="0xAAA", hostname="node-a")
    WorkerFactory(server_id="0xBBB", hostname="node-b")
    tasks = {}
    for identifier, (
        type_name,
        status,
        task_input,
        server_id,
        received,
        runtime,
        outcome,
    ) in TASKS.items():
        task_type = TaskTypeFactory(identifier=type_name)
        received_at = minutes(received) if received is not None else None
        started_at = received_at + timedelta(seconds=1) if status in STARTED else None
        finished_at = None
        if status in (Status.FINISHED, Status.FAILED):
            finished_at = started_at + timedelta(seconds=runtime)
        elif status == Status.REVOKED:
            finished_at = minutes(9)
        parent = tasks.get(PARENTS.get(identifier))
        task = TaskInstanceFactory(
            type=task_type,
            identifier=identifier,
            status=status,
            input=task_input,
            server_id=server_id,
            enqueued_at=T0,
            run_after=T0,
            received_at=received_at,
            started_at=started_at,
            finished_at=finished_at,
            updated_at=finished_at or started_at or received_at or T0,
            parent=parent,
            attempts=1 if started_at else 0,
        )
        root = parent.uuid if parent else task.uuid
        LogRecordFactory(
            instance=task,
            time=T0,
            status=Status.ACCEPTED,
            event=events.TASK_SENT,
            fields=events.task_fields(
                task,
                T0,
                **events.call_fields(task),
                identifier=task.identifier,
                root_id=str(root),
                parent_id=str(parent.uuid) if parent else None,
            ),
        )
        if received_at is not None:  # as the tracker's claim writes it
            LogRecordFactory(
                instance=task,
                time=received_at,
                status=Status.SCHEDULED,
                event=events.TASK_RECEIVED,
                fields=events.task_fields(
                    task, received_at, **events.call_fields(task), server_id=server_id
                ),
            )
        if outcome is not None:
            event = events.EVENT_FOR_STATUS[status]
            LogRecordFactory(
                instance=task,
                time=finished_at,
                status=status,
                event=event,
                fields=events.task_fields(task, finished_at, **outcome),
            )
        tasks[identifier] = task
    return tasks


def identifiers(tasks):
    """The identifiers of an iterable of tasks, in order."""
    return [task.identifier for task in tasks]
