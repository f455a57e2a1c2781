"""ATP's exceptions: one base class, one subclass per way a call can be refused."""


class ATPError(Exception):
    """Base class of every error ATP raises on purpose."""


class QueueException(ATPError):
    """Base class of the queue errors (kept from the EOxServer tracker)."""


class QueueEmpty(QueueException):
    """No task is ready to be dequeued."""


class QueueFull(QueueException):
    """The queue already holds as many waiting tasks as its limit allows."""


class UnknownTaskType(ATPError, LookupError):
    """No task type is registered under the given identifier."""


class TaskNotFound(ATPError, LookupError):
    """No task instance has the given id (or type and identifier)."""


class DuplicateTask(ATPError):
    """A task with the same type and identifier already exists."""


class InvalidTransition(ATPError):
    """The task's current status does not allow the requested change."""


class InvalidInput(ATPError, ValueError):
    """An argument is malformed: bad identifier, non-JSON input, bad option, bad handler..."""


class StaleAttempt(ATPError):
    """A worker wrote to a task it no longer owns: the task was re-enqueued or claimed again."""


class SoftTimeLimitExceeded(ATPError):
    """Raised inside a handler that ran past its type's ``soft_time_limit``.

    The handler may catch it to clean up; ``hard_time_limit``, if set, still kills it later
    (and so does its type's ``timeout`` if it stays silent that long).
    """


class ServerIdInUse(ATPError):
    """``atpd`` refused to start: a live daemon already runs with the ``--server-id`` given."""


class OutcomeNotRecorded(ATPError):
    """The daemon could not record how an attempt ended (the error is in its log); the task
    ended by its rules for a failed attempt instead."""


class SyncHandlerRefused(ATPError):
    """The asyncio pool was given a handler that is not ``async def`` (it runs only those)."""


# --- errors of Django tasks run by ATP (atp.backends) -------------------------------------
# Django's TaskResult.errors name an exception class by its dotted path; these are the paths
# ATP reports when a task ended without an exception of its own.


class TaskRevoked(ATPError):
    """The task was revoked (cancelled, aborted or expired) before it finished."""


class TaskFailed(ATPError):
    """The task was ended as FAILED without raising (its handler or a sweep failed it)."""


class ReturnValueNotJSON(ATPError, TypeError):
    """A Django task function or ``@task`` returned a value that cannot be stored as JSON."""


class Retry(BaseException):  # noqa: N818 - a control-flow signal, named like Celery's
    """Raised by ``task_status.retry()`` after the task was re-enqueued (or failed).

    A BaseException, so a handler's ``except Exception`` cannot swallow it: the handler
    stops, and the runner treats the attempt as already recorded.
    """

    def __init__(self, message="", *, failed=False, delay=None):
        super().__init__(message)
        self.failed = failed  # True when max_retries was used up and the task FAILED instead
        self.delay = delay  # seconds until the retry runs (None when failed)


class InvalidSearch(InvalidInput):
    """A task search query is malformed: bad syntax, unknown state, too short or too long."""


class ScheduleNotFound(ATPError, LookupError):
    """No schedule has the given name."""
