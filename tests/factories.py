"""factory-boy factories for ATP's models (rows written directly, bypassing the tracker)."""

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from atp.models import LogRecord, Response, Status, TaskInstance, TaskType, Worker


class TaskTypeFactory(DjangoModelFactory):
    class Meta:
        model = TaskType
        django_get_or_create = ("identifier",)

    identifier = factory.Sequence(lambda n: f"type-{n}")
    handler = "tests.handlers.noop"


class TaskInstanceFactory(DjangoModelFactory):
    class Meta:
        model = TaskInstance

    type = factory.SubFactory(TaskTypeFactory)
    identifier = factory.Sequence(lambda n: f"task-{n}")
    status = Status.ACCEPTED
    input = factory.LazyAttribute(lambda task: {"n": task.identifier})
    queue = factory.LazyAttribute(lambda task: task.type.queue)


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
