"""Django's tasks framework: ``django.tasks`` on Django 6+, the ``django_tasks`` backport before.

Everything ATP uses from the framework is imported here and only here, so the rest of ATP
never needs to know which of the two it runs with. The names are Django 6's.
"""

from importlib.util import find_spec

# find_spec, not try/except ImportError: a broken import inside django.tasks must surface,
# not silently switch ATP to the backport.
if find_spec("django.tasks") is not None:
    # Importing django.tasks registers its system check of the task backends (and so
    # ATPBackend.check); Django itself imports it only when some code uses it.
    from django.tasks import checks as framework_checks
    from django.tasks import task, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    FRAMEWORK = "django.tasks"
else:
    # The backport registers that check in its AppConfig; importing it registers it too,
    # whether or not "django_tasks" is in INSTALLED_APPS.
    from django_tasks import checks as framework_checks
    from django_tasks import task, task_backends
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

    FRAMEWORK = "django_tasks"

__all__ = [
    "FRAMEWORK",
    "BaseTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "framework_checks",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
