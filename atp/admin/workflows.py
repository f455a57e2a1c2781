"""The workflow admin (a workflow as one thing: state, progress, graph) and the task page's
dependencies and dependents."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from atp import workflows
from atp.admin import display
from atp.admin.workflow_graph import workflow_svg
from atp.models import Dependency, TaskInstance, Workflow

#: Dependencies or dependents listed on a task's page.
LINKS_LIMIT = 50


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    """Workflows (chains, groups, chords): their state, progress and graph."""

    list_display = ("id", "name", "state", "progress", "created_at", "end_task_link")
    list_per_page = 50
    search_fields = ("name",)
    fields = (("name", "uuid"), ("state", "progress"), "end_task_link", "created_at", "graph")
    readonly_fields = ("name", "uuid", "state", "progress", "end_task_link", "created_at", "graph")

    def has_add_permission(self, request):
        """Workflows are written by ``atp.workflows``, never by hand."""
        return False

    def has_change_permission(self, request, obj=None):
        """Read-only: a workflow changes through its tasks."""
        return False

    @admin.display(description="state")
    def state(self, workflow):
        """running / succeeded / failed."""
        return workflows.workflow_state(workflow.pk)["state"]

    @admin.display(description="progress")
    def progress(self, workflow):
        """Ended tasks of all, as a bar."""
        state = workflows.workflow_state(workflow.pk)
        return display.progress_bar({"done": state["ended"], "total": state["total"]})

    @admin.display(description="end task")
    def end_task_link(self, workflow):
        """The task whose end is the workflow's end."""
        if workflow.end_task_id is None:
            return "—"
        return _task_link(workflow.end_task_id, f"task {workflow.end_task_id}")

    @admin.display(description="graph")
    def graph(self, workflow):
        """Tasks coloured by status, dependencies as arrows."""
        return workflow_svg(workflow)


def dependencies_of(task: TaskInstance):
    """The tasks ``task`` waits for (in the order given), linked with their statuses."""
    edges = (
        Dependency.objects.filter(task=task)
        .select_related("depends_on")
        .order_by("position")[:LINKS_LIMIT]
    )
    return _links(edge.depends_on for edge in edges)


def dependents_of(task: TaskInstance):
    """The tasks that wait for ``task``, linked with their statuses."""
    edges = (Dependency.objects.filter(depends_on=task).select_related("task").order_by("task_id"))[
        :LINKS_LIMIT
    ]
    return _links(edge.task for edge in edges)


def workflow_link(task: TaskInstance):
    """The task's workflow, linked to its graph."""
    if task.workflow_id is None:
        return "—"
    url = reverse("admin:atp_workflow_change", args=[task.workflow_id])
    return format_html('<a href="{}">workflow {}</a>', url, task.workflow_id)


def _links(tasks):
    tasks = list(tasks)
    if not tasks:
        return "—"
    return format_html_join(
        " ",
        "{} {}",
        (
            (
                _task_link(task.pk, task.identifier) if task else "(deleted)",
                display.status_badge(task.status) if task else "",
            )
            for task in tasks
        ),
    )


def _task_link(task_id, text):
    url = reverse("admin:atp_taskinstance_change", args=[task_id])
    return format_html('<a href="{}">{}</a>', url, text)
