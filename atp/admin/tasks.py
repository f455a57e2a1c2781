"""The task instance admin: a fast list, a detail page that explains the task, and actions."""

import mimetypes

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from atp import tracker
from atp.admin import actions, columns, display
from atp.admin import search as task_search
from atp.admin import workflows as workflow_admin
from atp.admin.console import console_urls
from atp.admin.filters import ServerFilter, WaitingFilter
from atp.admin.paginator import EstimatedCountPaginator
from atp.models import TERMINAL, Response, Status, TaskInstance
from atp.query import waiting
from atp.tracker.subtasks import ITEM_COUNTERS

#: Log records shown on a task's page (newest kept); a task with more links to the rest.
TIMELINE_LIMIT = 200
#: Subtasks listed on a task's page.
CHILDREN_LIMIT = 50
#: Bytes of a text response shown inline.
TEXT_PREVIEW_BYTES = 100_000
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript")


def is_text(mime_type: str) -> bool:
    """Whether a response of this MIME type is shown as text rather than offered for download."""
    base = mime_type.split(";")[0].strip().lower()
    return base.startswith("text/") or base in _TEXT_TYPES or base.endswith(("+xml", "+json"))


@admin.register(TaskInstance)
class TaskInstanceAdmin(columns.DetailTimes, admin.ModelAdmin):
    """Tasks: what is queued, running, stuck or failing, why, and where."""

    list_display = (
        "id",
        "status_badge",
        "type",
        "identifier",
        columns.server,
        columns.attempts,
        "progress_bar",
        columns.enqueued,
        columns.started,
        columns.finished,
        "runtime",
    )
    list_display_links = ("id", "identifier")
    list_select_related = ("type",)
    list_filter = (
        "status",
        "type",
        ServerFilter,
        WaitingFilter,
        ("enqueued_at", admin.DateFieldListFilter),
    )
    list_per_page = 50
    search_fields = ("identifier",)  # shows the box; get_search_results does the real work
    search_help_text = task_search.HELP_TEXT
    # Big tables: no full-table COUNT on every page load, no per-filter counts.
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    actions = [
        actions.reenqueue,
        actions.revoke,
        actions.revoke_terminate,
        actions.abort,
        "delete_selected",
    ]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("type_link", "identifier"),
                    ("uuid", "status_badge"),
                    ("parent_link", "subtasks"),
                    ("workflow_link", "dependencies", "dependents"),
                    ("queue", "priority"),
                    ("run_after", "expires"),
                    ("unique_key", "concurrency_key"),
                    "waiting_because",
                )
            },
        ),
        (
            "Execution (owned by the daemon)",
            {
                "fields": (
                    ("server_link", "attempts", "retries"),
                    ("progress_bar", "runtime"),
                    "item_counts",
                    ("enqueued_time", "received_time"),
                    ("started_time", "finished_time"),
                    "updated_time",
                    ("abort_requested_time", "kill_signal"),
                )
            },
        ),
        ("Input", {"fields": ("input_json",)}),
        ("Response", {"fields": ("response_view",)}),
        ("Error", {"fields": ("traceback",)}),
        ("Timeline", {"fields": ("timeline",)}),
    )
    #: Fields an operator may edit: where a task sits in the queue, nothing the daemon owns.
    editable_fields = ("priority", "run_after", "expires")

    # --- permissions and queryset ---------------------------------------------------------

    def has_add_permission(self, request):
        """Tasks are created by ``enqueue_task``, never by hand."""
        return False

    def get_readonly_fields(self, request, obj=None):
        """Everything except queue placement, and everything once the task has ended."""
        computed = [
            "type_link",
            "status_badge",
            "waiting_because",
            "parent_link",
            "subtasks",
            "workflow_link",
            "dependencies",
            "dependents",
            "server_link",
            "progress_bar",
            "runtime",
            "item_counts",
            "input_json",
            "response_view",
            "traceback",
            "timeline",
        ]
        owned = [
            field.name
            for field in TaskInstance._meta.concrete_fields
            if obj is None or obj.status in TERMINAL or field.name not in self.editable_fields
        ]
        return computed + list(columns.DetailTimes.names) + owned

    def get_search_results(self, request, queryset, search_term):
        """ATP's search language (atp.query.search); a bare id or uuid matches exactly."""
        return task_search.search_tasks(request, queryset, search_term)

    def delete_queryset(self, request, queryset):
        """Delete through the tracker (the built-in "delete selected" action ends here)."""
        for task_id in queryset.values_list("pk", flat=True):
            tracker.delete_task(task_id)

    def delete_model(self, request, obj):
        """Delete one task through the tracker."""
        tracker.delete_task(obj.pk)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The task's page, with buttons for the actions (shown to users who may change)."""
        buttons = [
            ("reenqueue", "Re-enqueue"),
            ("revoke", "Revoke"),
            ("revoke_terminate", "Revoke + terminate"),
            ("abort", "Abort"),
        ]
        extra_context = {**(extra_context or {}), "atp_actions": buttons}
        return super().change_view(request, object_id, form_url, extra_context)

    # --- URLs: the dashboard and response downloads ---------------------------------------

    def get_urls(self):
        """Add the dashboard and the response download to the task admin's URLs."""
        from atp.admin.dashboard import dashboard_view

        wrap = self.admin_site.admin_view
        return [
            *console_urls(self, wrap),
            path(
                "dashboard/",
                wrap(lambda request: dashboard_view(self, request)),
                name="atp_dashboard",
            ),
            path(
                "<int:task_id>/response/",
                wrap(self.response_download),
                name="atp_taskinstance_response",
            ),
            *super().get_urls(),
        ]

    def response_download(self, request, task_id):
        """Serve a task's response with its MIME type, as an attachment, to viewers only."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        response = get_object_or_404(
            Response.objects.select_related("instance"), instance_id=task_id
        )
        extension = mimetypes.guess_extension(response.mime_type.split(";")[0].strip()) or ".bin"
        reply = HttpResponse(bytes(response.data), content_type=response.mime_type)
        # Attachment + nosniff + sandbox: a stored HTML/SVG response must never run as a page
        # of the admin's origin.
        reply["Content-Disposition"] = f'attachment; filename="task-{task_id}-response{extension}"'
        reply["X-Content-Type-Options"] = "nosniff"
        reply["Content-Security-Policy"] = "sandbox"
        return reply

    # --- columns and detail fields --------------------------------------------------------

    @admin.display(description="waiting because")
    def waiting_because(self, task):
        """Why a waiting task has not started (paused, key full, …); '—' if it does not wait."""
        if task.pk is None or task.status not in (Status.ACCEPTED, Status.BLOCKED):
            return "—"
        found = waiting.reasons(task)
        return "; ".join(found) if found else "nothing: it is next in line"

    @admin.display(description="status", ordering="status")
    def status_badge(self, task):
        """The status as a coloured badge."""
        return display.status_badge(task.status)

    @admin.display(description="progress")
    def progress_bar(self, task):
        """The handler's last progress report as a bar."""
        return display.progress_bar(task.progress)

    @admin.display(description="runtime")
    def runtime(self, task):
        """Start to end (or to now, while running)."""
        return display.duration(display.runtime_of(task, timezone.now()))

    @admin.display(description="type")
    def type_link(self, task):
        """The task type, linked to its admin page."""
        url = reverse("admin:atp_tasktype_change", args=[task.type_id])
        return format_html('<a href="{}">{}</a>', url, task.type.identifier)

    @admin.display(description="parent")
    def parent_link(self, task):
        """The parent task, linked."""
        if task.parent_id is None:
            return "—"
        url = reverse("admin:atp_taskinstance_change", args=[task.parent_id])
        return format_html('<a href="{}">{}</a>', url, task.parent)

    @admin.display(description="subtasks")
    def subtasks(self, task):
        """The first subtasks with their statuses, and a link to all of them."""
        children = list(task.children.select_related("type").order_by("pk")[: CHILDREN_LIMIT + 1])
        if not children:
            return "—"
        items = format_html_join(
            " ",
            '<a href="{}">{}</a> {}',
            (
                (
                    reverse("admin:atp_taskinstance_change", args=[child.pk]),
                    child.identifier,
                    display.status_badge(child.status),
                )
                for child in children[:CHILDREN_LIMIT]
            ),
        )
        all_url = reverse("admin:atp_taskinstance_changelist") + f"?parent__id__exact={task.pk}"
        more = "more…" if len(children) > CHILDREN_LIMIT else "list"
        return format_html('{} <a href="{}">({})</a>', items, all_url, more)

    @admin.display(description="items")
    def item_counts(self, task):
        """Items the subtasks reported (``add_item_counts``): a parent's totals, a subtask's own."""
        counts = display.item_counts_of(task)
        if counts is None:
            return "—"
        return ", ".join(f"{counts[name]} {name}" for name in ITEM_COUNTERS)

    @admin.display(description="workflow")
    def workflow_link(self, task):
        """The workflow the task belongs to, linked to its graph."""
        return workflow_admin.workflow_link(task)

    @admin.display(description="waits for")
    def dependencies(self, task):
        """The tasks this one depends on, with their statuses."""
        return workflow_admin.dependencies_of(task)

    @admin.display(description="dependents")
    def dependents(self, task):
        """The tasks that depend on this one, with their statuses."""
        return workflow_admin.dependents_of(task)

    @admin.display(description="server")
    def server_link(self, task):
        """The daemon that owns (or last owned) the task, linked to its worker page."""
        if not task.server_id:
            return "—"
        url = reverse("admin:atp_worker_changelist") + f"?q={task.server_id}"
        return format_html('<a href="{}">{}</a>', url, task.server_id)

    @admin.display(description="input")
    def input_json(self, task):
        """The input as indented JSON."""
        return display.pretty_json(task.input)

    @admin.display(description="response")
    def response_view(self, task):
        """Text responses inline; every response downloadable with its MIME type."""
        try:
            response = task.response
        except Response.DoesNotExist:
            return "—"
        url = reverse("admin:atp_taskinstance_response", args=[task.pk])
        link = format_html(
            '<a class="atp-download" href="{}">Download ({}, {} bytes)</a>',
            url,
            response.mime_type,
            len(response.data),
        )
        if not is_text(response.mime_type):
            return link
        text = bytes(response.data[:TEXT_PREVIEW_BYTES]).decode("utf-8", errors="replace")
        return format_html(
            '{}<pre class="atp-response" style="white-space:pre-wrap">{}</pre>', link, text
        )

    @admin.display(description="traceback")
    def traceback(self, task):
        """The exception and traceback of the task's last failure, if any."""
        record = (
            task.log.filter(event="task-failed").order_by("-time", "-id").only("fields").first()
        )
        if record is None:
            return "—"
        fields = record.fields or {}
        return format_html(
            '<p class="atp-exception"><strong>{}</strong></p>'
            '<pre class="atp-traceback" style="white-space:pre-wrap">{}</pre>',
            fields.get("exception", ""),
            fields.get("traceback", "") or "(no traceback recorded)",
        )

    @admin.display(description="events and log")
    def timeline(self, task):
        """The task's history, oldest first: time, status, Celery event, message."""
        records = list(task.log.order_by("-time", "-id")[: TIMELINE_LIMIT + 1])
        omitted = len(records) > TIMELINE_LIMIT
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    record.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                    display.status_badge(record.status),
                    record.event or "(note)",
                    record.message,
                )
                for record in reversed(records[:TIMELINE_LIMIT])
            ),
        )
        note = f"Only the last {TIMELINE_LIMIT} entries are shown." if omitted else ""
        return format_html(
            '<p>{}</p><table class="atp-timeline"><thead><tr><th>time</th><th>status</th>'
            "<th>event</th><th>message</th></tr></thead><tbody>{}</tbody></table>",
            note,
            rows,
        )
