"""A workflow drawn as SVG on the server: tasks as coloured boxes, dependencies as arrows.

Layout: a task's column is its depth (the longest chain of dependencies before it), so
edges always run left to right; a column taller than ``MAX_ROWS`` wraps into several
sub-columns, so a chord of 200 tasks stays a few screens wide and tall, not one long strip.
Task ids are a topological order (a task can only depend on tasks that existed before it),
so one pass in id order computes every depth.
"""

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from atp.admin.display import STATUS_COLOURS
from atp.models import Dependency, Status, TaskInstance

#: Tasks drawn at most; a bigger workflow is listed, not drawn.
MAX_TASKS = 1000
#: Boxes per sub-column before a column wraps.
MAX_ROWS = 40
BOX_WIDTH, BOX_HEIGHT = 150, 22
COLUMN_GAP, ROW_GAP, MARGIN = 50, 8, 10


def layout(tasks: list[TaskInstance], edges: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Each task's (x, y) box corner: columns by depth, wrapped every ``MAX_ROWS`` boxes."""
    before: dict[int, list[int]] = {}
    for task_id, depends_on in edges:
        before.setdefault(task_id, []).append(depends_on)
    depth: dict[int, int] = {}
    for task in sorted(tasks, key=lambda task: task.pk):
        depth[task.pk] = 1 + max((depth.get(d, -1) for d in before.get(task.pk, [])), default=-1)
    columns: dict[int, list[int]] = {}
    for task_id in sorted(depth):
        columns.setdefault(depth[task_id], []).append(task_id)
    places, x = {}, MARGIN
    for column in sorted(columns):
        ids = columns[column]
        for start in range(0, len(ids), MAX_ROWS):
            for row, task_id in enumerate(ids[start : start + MAX_ROWS]):
                places[task_id] = (x, MARGIN + row * (BOX_HEIGHT + ROW_GAP))
            x += BOX_WIDTH + COLUMN_GAP
    return places


def workflow_svg(workflow) -> str:
    """The SVG of ``workflow``'s tasks and dependencies (safe HTML), or a note if too big."""
    tasks = list(
        TaskInstance.objects.filter(workflow=workflow)
        .select_related("type")
        .only("pk", "status", "identifier", "type__identifier")
        .order_by("pk")[: MAX_TASKS + 1]
    )
    if len(tasks) > MAX_TASKS:
        return format_html("<p>More than {} tasks: too many to draw.</p>", MAX_TASKS)
    if not tasks:
        return mark_safe("<p>No tasks (they were deleted).</p>")  # noqa: S308 (constant)
    edges = list(
        Dependency.objects.filter(task__workflow=workflow, depends_on__workflow=workflow)
        .values_list("task_id", "depends_on_id")
        .order_by("task_id", "position")
    )
    places = layout(tasks, edges)
    width = max(x for x, _ in places.values()) + BOX_WIDTH + MARGIN
    height = max(y for _, y in places.values()) + BOX_HEIGHT + MARGIN
    lines = format_html_join(
        "",
        '<line x1="{}" y1="{}" x2="{}" y2="{}" class="atp-edge"/>',
        (
            (
                places[depends_on][0] + BOX_WIDTH,
                places[depends_on][1] + BOX_HEIGHT // 2,
                places[task_id][0],
                places[task_id][1] + BOX_HEIGHT // 2,
            )
            for task_id, depends_on in edges
        ),
    )
    boxes = format_html_join("", "{}", ((_box(task, *places[task.pk]),) for task in tasks))
    return format_html(
        '<svg class="atp-workflow-graph" xmlns="http://www.w3.org/2000/svg" width="{}" '
        'height="{}" viewBox="0 0 {} {}" role="img" aria-label="workflow graph">'
        "<style>.atp-edge{{stroke:#999;stroke-width:1;marker-end:url(#atp-arrow)}}"
        ".atp-node text{{font:11px sans-serif;fill:#fff}}</style>"
        '<defs><marker id="atp-arrow" viewBox="0 0 6 6" refX="6" refY="3" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L6,3 L0,6 z" fill="#999"/></marker></defs>'
        "{}{}</svg>{}",
        width,
        height,
        width,
        height,
        lines,
        boxes,
        legend(),
    )


def legend():
    """The status colours, as a line of badges under the graph."""
    return format_html(
        '<p class="atp-legend">{}</p>',
        format_html_join(
            " ",
            '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px">{}</span>',
            ((STATUS_COLOURS[status], status.label) for status in Status),
        ),
    )


def _box(task: TaskInstance, x: int, y: int):
    url = reverse("admin:atp_taskinstance_change", args=[task.pk])
    label = f"#{task.pk} {task.type.identifier}"
    if len(label) > 24:
        label = label[:23] + "…"
    return format_html(
        '<a href="{}" class="atp-node"><title>{} {}::{}</title>'
        '<rect x="{}" y="{}" width="{}" height="{}" rx="4" fill="{}"/>'
        '<text x="{}" y="{}">{}</text></a>',
        url,
        Status(task.status).label,
        task.type.identifier,
        task.identifier,
        x,
        y,
        BOX_WIDTH,
        BOX_HEIGHT,
        STATUS_COLOURS[Status(task.status)],
        x + 6,
        y + 15,
        label,
    )
