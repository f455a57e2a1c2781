"""List filters of the task admin that stay cheap on a big table."""

from django.contrib import admin

from atp.models import Worker
from atp.query import waiting


class ServerFilter(admin.SimpleListFilter):
    """Tasks by daemon (``server_id``); the choices come from the small Worker table.

    Django's default (``SELECT DISTINCT server_id``) would scan every task row.
    """

    title = "server"
    parameter_name = "server"

    def lookups(self, request, model_admin):
        """Known daemons, newest first, plus "none" for tasks no daemon owns."""
        choices = [("-", "(none)")]
        for server_id, hostname in Worker.objects.values_list("server_id", "hostname")[:50]:
            choices.append((server_id, f"{hostname} {server_id}"))
        return choices

    def queryset(self, request, queryset):
        """Filter on the chosen server id ("-" = no server)."""
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(server_id="" if value == "-" else value)


class WaitingFilter(admin.SimpleListFilter):
    """Waiting tasks by what holds them back (``atp.query.waiting``)."""

    title = "waiting because"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        """The reasons a task waits."""
        return waiting.REASONS

    def queryset(self, request, queryset):
        """The waiting tasks the chosen reason holds back."""
        if self.value() not in dict(waiting.REASONS):
            return queryset
        return waiting.filter_tasks(queryset, self.value())
