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


class InvalidSearch(InvalidInput):
    """A task search query is malformed: bad syntax, unknown state, too short or too long."""
