"""Pause and resume buttons on the dashboard, for one queue or one task type.

Each button posts here; the change goes through ``atp.control`` and needs the permission to
change task types (``atp.admin.pauses.PAUSE_PERMISSION``), as the paused-queue admin, the
type list's actions and the HTTP routes do.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import reverse

from atp import control
from atp.admin.pauses import PAUSE_PERMISSION
from atp.exceptions import ATPError

_DO = {
    ("queue", "pause"): control.pause_queue,
    ("queue", "resume"): control.resume_queue,
    ("type", "pause"): control.pause_task_type,
    ("type", "resume"): control.resume_task_type,
}


def pause_view(model_admin, request):
    """POST ``target=queue|type``, ``name``, ``do=pause|resume``; back to the dashboard."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not request.user.has_perm(PAUSE_PERMISSION):
        raise PermissionDenied
    target, name, do = (request.POST.get(key, "") for key in ("target", "name", "do"))
    action = _DO.get((target, do))
    if action is None:
        messages.error(request, f"Unknown pause request: {do!r} of a {target!r}.")
    else:
        try:
            changed = action(name)
        except ATPError as exc:
            messages.error(request, f"Could not {do} {target} {name!r}: {exc}")
        else:
            state = f"{do}d" if changed else ("already paused" if do == "pause" else "not paused")
            messages.success(request, f"{target.capitalize()} {name} {state}.")
    return HttpResponseRedirect(reverse("admin:atp_dashboard"))
