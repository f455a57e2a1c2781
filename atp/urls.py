"""URLs of ATP's JSON API (Flower's routes); include them with ``include("atp.urls")``."""

from django.urls import path

from atp.http import flow, metrics
from atp.http import schedules as schedule_api
from atp.http import views as api

app_name = "atp"

urlpatterns = [
    path("api/tasks", api.tasks, name="api-tasks"),
    path("api/task/types", api.task_types, name="api-task-types"),
    path("api/task/info/<str:task_id>", api.task_info, name="api-task-info"),
    path("api/task/result/<str:task_id>", api.task_result, name="api-task-result"),
    path("api/task/apply/<path:name>", api.apply, name="api-task-apply"),
    path("api/task/async-apply/<path:name>", api.async_apply, name="api-task-async-apply"),
    path("api/task/send-task/<path:name>", api.send_task, name="api-task-send-task"),
    path("api/task/abort/<str:task_id>", api.abort, name="api-task-abort"),
    path("api/task/revoke/<str:task_id>", api.revoke, name="api-task-revoke"),
    path("api/task/rate-limit/<path:name>", api.rate_limit, name="api-task-rate-limit"),
    path("api/task/timeout/<path:name>", api.timeout, name="api-task-timeout"),
    path("api/workers", api.workers, name="api-workers"),
    path("api/queue/pause/<path:name>", flow.pause_queue, name="api-queue-pause"),
    path("api/queue/resume/<path:name>", flow.resume_queue, name="api-queue-resume"),
    path("api/task-type/pause/<path:name>", flow.pause_task_type, name="api-task-type-pause"),
    path("api/task-type/resume/<path:name>", flow.resume_task_type, name="api-task-type-resume"),
    # Periodic tasks (atp.schedules)
    path("api/schedules", schedule_api.schedule_list, name="api-schedules"),
    path("api/schedule/pause/<str:name>", schedule_api.pause, name="api-schedule-pause"),
    path("api/schedule/resume/<str:name>", schedule_api.resume, name="api-schedule-resume"),
    path("metrics", metrics.metrics, name="metrics"),
]
