"""The ATP app's configuration."""

from django.apps import AppConfig


class ATPConfig(AppConfig):
    """Registers ATP's system checks when Django starts."""

    name = "atp"
    verbose_name = "ATP task queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Import the checks module so its checks register."""
        from atp import checks  # noqa: F401
