"""Actions on ALL tasks matching the change list's filters and search, in short batches.

The operator picks an action on ``bulk/?filters=<the list's query string>``; the page states
how many tasks match and asks for confirmation. Confirming runs the action in batches: each
request handles at most ``BATCH_SIZE`` tasks (or ``BATCH_SECONDS`` of work), in id order
after the last one done, then the page posts the next batch by itself (a button without
JavaScript). Each task goes through the tracker in its own short transaction, exactly like
the ticked-rows actions, so no request runs long and no lock is held across a batch; a
100,000-task action is 100 requests. The ids are bounded by the largest matching id at
confirmation, so tasks created meanwhile (re-runs of ended tasks, new work) are left alone.
Closing the page stops the action between batches; re-opening it resumes on what still
matches.
"""

import json
import time
from copy import copy
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Max
from django.http import HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import reverse

from atp.admin import actions

#: Tasks handled per request.
BATCH_SIZE = 1000
#: A request stops its batch early after this much work, so it never nears a proxy timeout.
BATCH_SECONDS = 10.0

#: name → (label, permission, per-task function, verb of the report).
BULK_ACTIONS = {
    "reenqueue": ("Re-enqueue (ended ones as a new task)", "change", actions.reenqueue_one),
    "revoke": ("Revoke", "change", actions.revoke_one),
    "revoke_terminate": (
        "Revoke and terminate running handlers",
        "change",
        actions.revoke_terminate_one,
    ),
    "abort": ("Abort", "change", actions.abort_one),
    "delete": ("Delete", "delete", actions.delete_one),
}


def matching(model_admin, request, filters: str):
    """The tasks the change list shows for the query string ``filters`` (all pages)."""
    listing = copy(request)
    listing.GET = QueryDict(filters)
    changelist = model_admin.get_changelist_instance(listing)
    return changelist.get_queryset(listing).order_by()


def allowed(model_admin, request, name: str) -> bool:
    """Whether the user holds the permission the action ``name`` needs."""
    permission = BULK_ACTIONS[name][1]
    return getattr(model_admin, f"has_{permission}_permission")(request)


def run_batch(model_admin, request, tasks, name: str, after: int, upto: int):
    """Apply action ``name`` to the next batch of ``tasks`` with ids in (after, upto].

    Returns ``(outcome, last id done or None when nothing was left)``.
    """
    per_task = BULK_ACTIONS[name][2]
    ids = list(
        tasks.filter(pk__gt=after, pk__lte=upto)
        .order_by("pk")
        .values_list("pk", flat=True)[:BATCH_SIZE]
    )
    outcome = actions.Outcome(BULK_ACTIONS[name][0])
    if not ids:
        return outcome, None
    deadline = time.monotonic() + BATCH_SECONDS
    last = after
    for task in actions._tasks(model_admin.model.objects.filter(pk__in=ids)):
        per_task(task, request, outcome)
        last = task.pk
        if time.monotonic() > deadline:
            break
    else:
        last = ids[-1]  # ids deleted meanwhile are done too
    return outcome, last


def bulk_view(model_admin, request):
    """Choose, confirm and run an action on every task matching the list's filters."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    data = request.POST if request.method == "POST" else request.GET
    filters = data.get("filters", "")
    name = data.get("action", "")
    list_url = reverse("admin:atp_taskinstance_changelist") + (f"?{filters}" if filters else "")
    tasks = matching(model_admin, request, filters)
    choices = [
        (key, spec[0]) for key, spec in BULK_ACTIONS.items() if allowed(model_admin, request, key)
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Act on all matching tasks",
        "filters": filters,
        "list_url": list_url,
        "choices": choices,
        "batch_size": BATCH_SIZE,
    }
    if name not in BULK_ACTIONS:
        return TemplateResponse(request, "admin/atp/taskinstance/bulk.html", context)
    if not allowed(model_admin, request, name):
        raise PermissionDenied
    context.update(action=name, label=BULK_ACTIONS[name][0])
    if request.method != "POST":
        # The confirmation page: an exact count of what the action will touch.
        upto = tasks.aggregate(top=Max("pk"))["top"] or 0
        context.update(count=tasks.count(), upto=upto, after=0, tally="{}")
        return TemplateResponse(request, "admin/atp/taskinstance/bulk.html", context)
    after, upto = int(data.get("after", 0)), int(data.get("upto", 0))
    tally = json.loads(data.get("tally") or "{}")
    outcome, last = run_batch(model_admin, request, tasks, name, after, upto)
    tally["changed"] = tally.get("changed", 0) + outcome.changed
    skipped = tally.setdefault("skipped", {})
    for reason, names in outcome.skipped.items():
        skipped[reason] = skipped.get(reason, 0) + len(names)
    if last is None:
        text = f"{context['label']}: {tally['changed']} task(s) changed"
        if skipped:
            text += "; skipped " + "; ".join(f"{n} {reason}" for reason, n in skipped.items())
        level = messages.WARNING if skipped else messages.SUCCESS
        model_admin.message_user(request, text + ".", level)
        return HttpResponseRedirect(list_url)
    left = tasks.filter(pk__gt=last, pk__lte=upto).count()
    context.update(running=True, after=last, upto=upto, tally=json.dumps(tally), left=left)
    context["next_query"] = urlencode({"filters": filters, "action": name})
    return TemplateResponse(request, "admin/atp/taskinstance/bulk.html", context)
