"""URLs of ATP's JSON API (Flower's routes); include them with ``include("atp.urls")``."""

from django.urls import path, re_path

from atp.http import views as api
from atp.http.errors import not_found
from atp.http.openapi import openapi_json

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
    path("api/openapi.json", openapi_json, name="api-openapi"),
    # Last: any other path under api/ answers a JSON 404 too, not Django's HTML page.
    re_path(r"^api/", not_found, name="api-not-found"),
]
