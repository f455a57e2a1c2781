"""ATP's Django admin: the operations console (tasks, types, schedules, daemons, dashboard).

Importing this package registers the model admins; ``atp.admin.dashboard`` is served under
the task admin's URLs (``admin:atp_dashboard``) and linked from ATP's app index.
"""

from atp.admin.pauses import QueuePauseAdmin
from atp.admin.schedules import ScheduleAdmin
from atp.admin.tasks import TaskInstanceAdmin
from atp.admin.types import TaskTypeAdmin
from atp.admin.workers import WorkerAdmin
from atp.admin.workflows import WorkflowAdmin

__all__ = [
    "QueuePauseAdmin",
    "ScheduleAdmin",
    "TaskInstanceAdmin",
    "TaskTypeAdmin",
    "WorkerAdmin",
    "WorkflowAdmin",
]
