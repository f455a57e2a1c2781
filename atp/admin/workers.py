"""The worker admin: every atpd daemon, alive or dead, with the tasks it runs."""

from datetime import timedelta

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from atp.admin import display
from atp.conf import settings
from atp.models import TaskInstance, Worker


class AliveFilter(admin.SimpleListFilter):
    """Daemons by liveness: a heartbeat within ATP['WORKER_TIMEOUT'] seconds, or not."""

    title = "liveness"
    parameter_name = "alive"

    def lookups(self, request, model_admin):
        """Alive, dead (silent or stopped)."""
        return [("yes", "alive"), ("no", "dead or stopped")]

    def queryset(self, request, queryset):
        """Filter on the heartbeat cutoff."""
        cutoff = timezone.now() - timedelta(seconds=settings.WORKER_TIMEOUT)
        alive = Worker.objects.alive(cutoff).values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=alive)
        if self.value() == "no":
            return queryset.exclude(pk__in=alive)
        return queryset


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """Daemons are registered by atpd itself; the admin only shows them."""

    list_display = (
        "server_id",
        "hostname",
        "pid",
        "started_at",
        "heartbeat_at",
        "stopped_at",
        "alive",
        "tasks_running",
    )
    list_filter = (AliveFilter, "hostname")
    search_fields = ("server_id", "hostname")
    readonly_fields = ("server_id", "hostname", "pid", "started_at", "heartbeat_at", "stopped_at")

    def has_add_permission(self, request):
        """Daemons register themselves."""
        return False

    def has_change_permission(self, request, obj=None):
        """Nothing about a daemon is edited by hand."""
        return False

    def get_queryset(self, request):
        """Workers with their active task count (one subquery on the active-owner index)."""
        running = (
            TaskInstance.objects.active()
            .filter(server_id=OuterRef("server_id"))
            .order_by()
            .values("server_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(running_count=Subquery(running, output_field=IntegerField()))
        )

    @admin.display(description="started", ordering="started_at")
    def started_at(self, worker):
        """When the daemon started, to the second."""
        return display.timestamp(worker.started_at)

    @admin.display(description="last heartbeat", ordering="heartbeat_at")
    def heartbeat_at(self, worker):
        """The last heartbeat, to the second, with its age."""
        return display.heartbeat(worker.heartbeat_at)

    @admin.display(description="stopped", ordering="stopped_at")
    def stopped_at(self, worker):
        """When the daemon said it stopped, to the second."""
        return display.timestamp(worker.stopped_at)

    @admin.display(boolean=True, description="alive")
    def alive(self, worker):
        """Not stopped, and a heartbeat within ATP['WORKER_TIMEOUT'] seconds."""
        cutoff = timezone.now() - timedelta(seconds=settings.WORKER_TIMEOUT)
        return worker.stopped_at is None and worker.heartbeat_at >= cutoff

    @admin.display(description="tasks running", ordering="running_count")
    def tasks_running(self, worker):
        """SCHEDULED, RUNNING and PAUSED tasks the daemon owns, linked to the task list."""
        url = reverse("admin:atp_taskinstance_changelist") + f"?server={worker.server_id}"
        return format_html('<a href="{}">{}</a>', url, worker.running_count or 0)
