"""The ATP app's configuration."""

from django.apps import AppConfig


class ATPConfig(AppConfig):
    """Registers ATP's system checks and its eager-mode hook when Django starts."""

    name = "atp"
    verbose_name = "ATP task queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Register ATP's system checks and those of the tasks framework; hook eager mode.

        The framework's check runs each task backend's ``check()`` (ATPBackend's reports
        bad OPTIONS and QUEUES). Django 6 registers it only when ``django.tasks`` is
        imported, which may happen after ``manage.py check`` ran, or never: importing it
        here makes the check run whatever the import order.
        """
        from atp import checks, tasks_compat, testing  # noqa: F401
        from atp.tracker import queueing

        # Eager mode (ATP["EAGER"], read at each enqueue) runs tasks through atp.testing.
        queueing.eager_hook = testing.after_enqueue
