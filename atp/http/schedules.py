"""The schedules' JSON API: list them, pause and resume them (see ``atp.schedules``).

The rules of the rest of the API apply (``atp.http.auth``): session or HTTP Basic users,
CSRF for what a browser could have sent, JSON errors. Reading needs ``atp.view_schedule``,
pausing and resuming ``atp.change_schedule`` (the schedule model's own permissions, as tasks
and task types have theirs).
"""

from django.http import JsonResponse

from atp import schedules
from atp.exceptions import ScheduleNotFound
from atp.http.auth import api_view, error
from atp.models import Schedule, Status, TaskInstance

READ_SCHEDULES = "atp.view_schedule"
CHANGE_SCHEDULES = "atp.change_schedule"


def _epoch(moment):
    return moment.timestamp() if moment else None


def as_dict(schedule: Schedule, run: dict | None) -> dict:
    """A schedule as the API shows it; times are epoch seconds, as for tasks."""
    return {
        "name": schedule.name,
        "task": schedule.task_type.identifier,
        "cron": schedule.cron or None,
        "every": schedule.every,
        "timezone": schedule.timezone,
        "input": schedule.input,
        "options": schedule.options,
        "enabled": schedule.enabled,
        "catch_up": schedule.catch_up,
        "source": schedule.source,
        "next_run": _epoch(schedule.next_slot) if schedule.enabled else None,
        "last_run": None
        if run is None
        else {
            "id": run["pk"],
            "uuid": str(run["uuid"]),
            "identifier": run["identifier"],
            "state": Status(run["status"]).label,
            "enqueued": _epoch(run["enqueued_at"]),
        },
    }


@api_view(READ_SCHEDULES)
def schedule_list(request):
    """GET /api/schedules: an object name → schedule, with its next slot and last run."""
    found = list(Schedule.objects.select_related("task_type").order_by("name"))
    last = TaskInstance.objects.filter(pk__in=[s.last_task_id for s in found if s.last_task_id])
    runs = {
        run["pk"]: run for run in last.values("pk", "uuid", "identifier", "status", "enqueued_at")
    }
    return JsonResponse({s.name: as_dict(s, runs.get(s.last_task_id)) for s in found})


def _steer(step, name: str, verb: str):
    try:
        schedule = step(name)
    except ScheduleNotFound:
        return error(404, f"Unknown schedule '{name}'")
    return JsonResponse({"message": f"{verb} schedule '{name}'", "enabled": schedule.enabled})


@api_view(CHANGE_SCHEDULES, methods=("POST",))
def pause(request, name):
    """POST /api/schedule/pause/<name>: no runs until resumed."""
    return _steer(schedules.pause_schedule, name, "Paused")


@api_view(CHANGE_SCHEDULES, methods=("POST",))
def resume(request, name):
    """POST /api/schedule/resume/<name>: runs again; missed slots run by its catch_up."""
    return _steer(schedules.resume_schedule, name, "Resumed")
