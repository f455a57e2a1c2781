"""The test app's configuration."""

from django.apps import AppConfig


class TaskAppConfig(AppConfig):
    """Installed by ``tests.settings`` only: the suite's own project with ``@task`` functions."""

    name = "tests.taskapp"
    label = "taskapp"
