"""The operations console's extra URLs under the task admin: bulk actions and live JSON."""

from django.urls import path

from atp.admin import bulk, live, pause_buttons


def console_urls(model_admin, wrap) -> list:
    """URL patterns of the console pages, each wrapped by the admin site's login check."""

    def view(function):
        return wrap(lambda request: function(model_admin, request))

    return [
        path("bulk/", view(bulk.bulk_view), name="atp_taskinstance_bulk"),
        path("live/dashboard.json", view(live.dashboard_json), name="atp_live_dashboard"),
        path("live/tasks.json", view(live.tasks_json), name="atp_live_tasks"),
        path("live/workers.json", view(live.workers_json), name="atp_live_workers"),
        path("pause/", view(pause_buttons.pause_view), name="atp_pause"),
    ]
