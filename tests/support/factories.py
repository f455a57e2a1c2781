"""factory-boy factories for ATP's models (rows written directly, bypassing the tracker).

``TaskInstanceFactory(status=...)`` builds a row that looks like the tracker left it in that
status: a claimed task has a ``server_id`` and ``received_at``, a started one an attempt and
``started_at``, an ended one ``finished_at``. Tests set up states with factories and check
behaviour through the tracker.
"""

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from atp.models import TERMINAL, LogRecord, Response, Status, TaskInstance, TaskType, Worker

#: The daemon that "claimed" factory-made tasks.
SERVER_ID = "server-1"
#: Statuses of a task some daemon has claimed (REVOKED may happen before any claim).
CLAIMED = frozenset(
    {
        Status.SCHEDULED,
        Status.RUNNING,
        Status.PAUSED,
        Status.WAITING,
        Status.FINISHED,
        Status.FAILED,
    }
)
#: Statuses of a task whose handler has been started at least once.
STARTED = CLAIMED - {Status.SCHEDULED}


def _when(statuses):
    """A lazy timestamp: now if the task's status is in ``statuses``, else None."""
    return factory.LazyAttribute(lambda task: timezone.now() if task.status in statuses else None)


class TaskTypeFactory(DjangoModelFactory):
    class Meta:
        model = TaskType
        django_get_or_create = ("identifier",)

    identifier = factory.Sequence(lambda n: f"type-{n}")
    handler = "tests.support.handlers.noop"


class TaskInstanceFactory(DjangoModelFactory):
    class Meta:
        model = TaskInstance

    type = factory.SubFactory(TaskTypeFactory)
    identifier = factory.Sequence(lambda n: f"task-{n}")
    status = Status.ACCEPTED
    input = factory.LazyAttribute(lambda task: {"n": task.identifier})
    queue = factory.LazyAttribute(lambda task: task.type.queue)
    priority = factory.LazyAttribute(lambda task: task.type.priority)
    server_id = factory.LazyAttribute(lambda task: SERVER_ID if task.status in CLAIMED else "")
    attempts = factory.LazyAttribute(lambda task: 1 if task.status in STARTED else 0)
    received_at = _when(CLAIMED)
    started_at = _when(STARTED)
    finished_at = _when(TERMINAL)


class ResponseFactory(DjangoModelFactory):
    class Meta:
        model = Response

    instance = factory.SubFactory(TaskInstanceFactory)
    data = b"<ok/>"
    mime_type = "text/xml"


class LogRecordFactory(DjangoModelFactory):
    class Meta:
        model = LogRecord

    instance = factory.SubFactory(TaskInstanceFactory)
    status = factory.LazyAttribute(lambda record: record.instance.status)
    message = ""


class WorkerFactory(DjangoModelFactory):
    class Meta:
        model = Worker

    server_id = factory.Sequence(lambda n: f"0x{n:016X}")
    hostname = "testhost"
    pid = factory.Sequence(lambda n: 1000 + n)
    heartbeat_at = factory.LazyFunction(timezone.now)
