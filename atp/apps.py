"""The ATP app's configuration."""

from django.apps import AppConfig


class ATPConfig(AppConfig):
    """Registers ATP's system checks and its eager-mode hook when Django starts."""

    name = "atp"
    verbose_name = "ATP task queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Import the checks module so its checks register; hook eager mode into enqueues."""
        from atp import (
            checks,  # noqa: F401
            testing,
        )
        from atp.tracker import queueing

        # Eager mode (ATP["EAGER"], read at each enqueue) runs tasks through atp.testing.
        queueing.eager_hook = testing.after_enqueue
