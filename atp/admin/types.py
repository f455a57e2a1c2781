"""The task type admin: limits at a glance, with task counts, edited as register_task_type would."""

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.urls import reverse
from django.utils.html import format_html_join

from atp import tracker
from atp.admin import pauses, stats
from atp.admin.display import duration, status_badge
from atp.conf import settings
from atp.exceptions import InvalidInput
from atp.models import TERMINAL, TaskType

#: The form fields that map onto register_task_type's named parameters and options.
_NAMED = ("handler", "timeout", "timeret", "maxrestart")


class TaskTypeForm(forms.ModelForm):
    """Checks every value with ``tracker.clean_task_type`` (the checks of register_task_type)."""

    class Meta:
        model = TaskType
        fields = (
            "identifier",
            "handler",
            "timeout",
            "timeret",
            "maxrestart",
            "priority",
            "queue",
            "max_queue_size",
            "max_retries",
            "retry_backoff",
            "retry_backoff_max",
            "rate_limit",
            "soft_time_limit",
            "hard_time_limit",
            "concurrency_limit",
            "options",
        )

    def clean(self):
        """Validate the whole type as ``register_task_type`` would; errors name the field."""
        data = super().clean()
        identifier = data.get("identifier") or (
            self.instance.identifier if self.instance.pk else None
        )
        if self.errors or identifier is None:
            return data
        named = {name: data[name] for name in _NAMED if name in data}
        options = {
            name: data[name]
            for name in tracker.TYPE_OPTIONS
            if name in data and name in self.fields
        }
        # An empty rate limit is "none" (the model's default); the validator wants a rate.
        if not options.get("rate_limit"):
            options.pop("rate_limit", None)
        try:
            _, values = tracker.clean_task_type(identifier, **named, **options)
        except InvalidInput as exc:
            raise forms.ValidationError(str(exc)) from exc
        data.update({name: value for name, value in values.items() if name in data})
        return data


class TypeChangeList(ChangeList):
    """The task type list; each row gets ``atp_counts`` ({status: n}) from one query."""

    def get_results(self, request):
        """Fetch the page, then its counts per type and status in one GROUP BY."""
        super().get_results(request)
        counts = stats.counts_by_type([task_type.pk for task_type in self.result_list])
        for task_type in self.result_list:
            task_type.atp_counts = counts.of(task_type.pk)
            task_type.atp_estimated = counts.estimated


@admin.register(TaskType)
class TaskTypeAdmin(admin.ModelAdmin):
    """Task types with their counts per status and their limits."""

    form = TaskTypeForm
    list_display = (
        "identifier",
        "handler",
        "counts",
        "queue_limit",
        "timeout_display",
        "time_limits",
        "retention",
        "maxrestart",
        "rate_limit",
        "flow",
    )
    search_fields = ("identifier", "handler")
    list_filter = ("queue", "paused")
    actions = [pauses.pause_types, pauses.resume_types]

    def get_readonly_fields(self, request, obj=None):
        """The identifier names the type everywhere; it cannot change once saved. Pausing
        is an action (it notifies the daemons), not a field."""
        fixed = ("paused", "created_at", "updated_at")
        return ("identifier", *fixed) if obj else fixed

    def get_changelist(self, request, **kwargs):
        """A change list that fetches the page's task counts in one aggregate query."""
        return TypeChangeList

    @admin.display(description="tasks by status")
    def counts(self, task_type):
        """Non-zero counts per status, each linking to the filtered task list."""
        per_status = getattr(task_type, "atp_counts", {})
        if not per_status:
            return "—"
        url = reverse("admin:atp_taskinstance_changelist")
        estimated = getattr(task_type, "atp_estimated", False)

        def approx(status):
            # Ended counts on a big PostgreSQL table are statistics estimates (stats.py).
            return "≈" if estimated and status in TERMINAL else ""

        return format_html_join(
            " ",
            '<a href="{}?type__id__exact={}&status__exact={}">{} {}{}</a>',
            (
                (url, task_type.pk, status, status_badge(status), approx(status), n)
                for status, n in sorted(per_status.items())
            ),
        )

    @admin.display(description="queue limit")
    def queue_limit(self, task_type):
        """The type's own limit, or the shared one."""
        if task_type.max_queue_size is not None:
            return task_type.max_queue_size
        return f"shared ({settings.MAX_QUEUE_SIZE or 'no limit'})"

    @admin.display(description="timeout", ordering="timeout")
    def timeout_display(self, task_type):
        """Seconds without an update before a task is a zombie."""
        return duration(task_type.timeout)

    @admin.display(description="soft / hard limit")
    def time_limits(self, task_type):
        """The soft and hard time limits, '—' when unset."""
        return " / ".join(
            duration(value) if value is not None else "—"
            for value in (task_type.soft_time_limit, task_type.hard_time_limit)
        )

    @admin.display(description="flow")
    def flow(self, task_type):
        """Paused or not, and the concurrency limit per key."""
        parts = ["paused"] if task_type.paused else []
        if task_type.concurrency_limit is not None:
            parts.append(f"{task_type.concurrency_limit} per concurrency key")
        return ", ".join(parts) or "—"

    @admin.display(description="retention", ordering="timeret")
    def retention(self, task_type):
        """How long ended tasks are kept."""
        return duration(task_type.timeret) if task_type.timeret > 0 else "forever"
