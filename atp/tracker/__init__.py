"""The process tracker: registering types, queueing tasks and moving them through statuses.

This package is the only code that changes a task's status. Every change is one transaction
that validates the transition against ``models.TRANSITIONS`` and writes exactly one LogRecord
(with its Celery event), so a crash never leaves a half-made change behind.

Writes made on behalf of a running attempt may pass ``attempt=`` (the attempt number that
``begin_attempt`` returned). It is a fencing token: once the task was given up (re-enqueued,
claimed again, restarted) the old attempt's writes raise ``StaleAttempt`` instead of
overwriting the new attempt's state.

One job per module: ``core`` (result types, lookups, ``_transition`` and the fencing check),
``tasktypes``, ``reading``, ``queueing`` (with ``unique``), ``pausing``, ``claiming`` (with
``ratelimit`` and ``concurrency``), ``running``, ``reporting``, ``requesting``, ``sweeps``
and ``deleting``. Callers use the package (``tracker.enqueue_task``), never a module: the
names below are the API, and patching one here (as tests do) reaches every caller that goes
through the package.
"""

# The exceptions and models callers reached as ``tracker.X`` when the tracker was one module.
from atp.exceptions import (
    DuplicateTask,
    InvalidInput,
    InvalidTransition,
    QueueEmpty,
    QueueFull,
    StaleAttempt,
    TaskNotFound,
    UnknownTaskType,
)
from atp.models import (
    TERMINAL,
    LogRecord,
    Response,
    Status,
    TaskInstance,
    TaskType,
    Worker,
    sources_of,
)
from atp.tracker import core, dependencies, subtasks
from atp.tracker.batch_sql import batched_log_records
from atp.tracker.claiming import claim_tasks, dequeue_task
from atp.tracker.core import (
    Attempt,
    LogEntry,
    StatusInfo,
    SweepEntry,
    TaskIdentifier,
    TaskInfo,
)
from atp.tracker.deleting import delete_task, delete_task_by_identifier, delete_tasks
from atp.tracker.dependencies import decide_orphaned_dependents, results_of
from atp.tracker.pausing import current as current_pauses
from atp.tracker.pausing import (
    give_back_unstarted,
    pause_queue,
    pause_task_type,
    paused_among,
    paused_queues,
    resume_queue,
    resume_task_type,
)
from atp.tracker.queueing import (
    ENQUEUE_OPTIONS,
    enqueue_task,
    enqueue_tasks,
    enqueue_unique,
    reenqueue_task,
)
from atp.tracker.reading import (
    count_by_status,
    get_max_queue_size,
    get_queue_size,
    get_task_identifier,
    get_task_info,
    get_task_log,
    get_task_response,
    get_task_status,
    get_task_status_by_identifier,
    get_task_type,
)
from atp.tracker.reporting import heartbeat, set_task_progress, set_task_response
from atp.tracker.requesting import (
    Stopped,
    abort_task,
    cancel_task,
    check_kill_signal,
    request_abort,
    request_kill,
)
from atp.tracker.running import (
    begin_attempt,
    finish_tasks,
    pause_task,
    resume_task,
    revoke_task,
    start_task,
    stop_task_failure,
    stop_task_success,
    stop_task_success_if_not_finished,
    wait_for_subtasks,
)
from atp.tracker.sweeps import (
    delete_retired_tasks,
    reclaim_orphans,
    recover_lost_workers,
    reenqueue_zombie_tasks,
    restart_or_fail,
    retired_task_deletions,
)
from atp.tracker.tasktypes import (
    TYPE_OPTIONS,
    clean_task_type,
    register_task_type,
    unregister_task_type,
    update_task_type,
)

__all__ = [
    "batched_log_records",
    # types and results
    "Attempt",
    "LogEntry",
    "StatusInfo",
    "SweepEntry",
    "TaskIdentifier",
    "TaskInfo",
    # task types
    "TYPE_OPTIONS",
    "clean_task_type",
    "register_task_type",
    "unregister_task_type",
    "update_task_type",
    # reading and deleting
    "count_by_status",
    "delete_task",
    "delete_task_by_identifier",
    "delete_tasks",
    "get_max_queue_size",
    "get_queue_size",
    "get_task_identifier",
    "get_task_info",
    "get_task_log",
    "get_task_response",
    "get_task_status",
    "get_task_status_by_identifier",
    "get_task_type",
    # queueing
    "ENQUEUE_OPTIONS",
    "enqueue_task",
    "enqueue_tasks",
    "enqueue_unique",
    "reenqueue_task",
    # pausing
    "current_pauses",
    "give_back_unstarted",
    "pause_queue",
    "pause_task_type",
    "paused_among",
    "paused_queues",
    "resume_queue",
    "resume_task_type",
    # claiming
    "claim_tasks",
    "dequeue_task",
    # running attempts
    "begin_attempt",
    "finish_tasks",
    "pause_task",
    "resume_task",
    "revoke_task",
    "start_task",
    "stop_task_failure",
    "stop_task_success",
    "stop_task_success_if_not_finished",
    "wait_for_subtasks",
    # dependencies
    "results_of",
    # reporting
    "heartbeat",
    "set_task_progress",
    "set_task_response",
    # operator requests
    "Stopped",
    "abort_task",
    "cancel_task",
    "request_abort",
    "request_kill",
    "check_kill_signal",
    # sweeps
    "decide_orphaned_dependents",
    "delete_retired_tasks",
    "retired_task_deletions",
    "reclaim_orphans",
    "recover_lost_workers",
    "reenqueue_zombie_tasks",
    "restart_or_fail",
    # re-exported exceptions and models
    "DuplicateTask",
    "InvalidInput",
    "InvalidTransition",
    "QueueEmpty",
    "QueueFull",
    "StaleAttempt",
    "TaskNotFound",
    "UnknownTaskType",
    "TERMINAL",
    "LogRecord",
    "Response",
    "Status",
    "TaskInstance",
    "TaskType",
    "Worker",
    "sources_of",
]

# What a task's end triggers: the subtask roll-up ends parents and the release of dependents
# revokes or releases tasks, both through the transitions above. core calls them when a task
# ends (core.SUBTASK_ENDED_HOOKS, DEPENDENCY_ENDED_HOOKS), so it need not import them.
core.SUBTASK_ENDED_HOOKS.append(subtasks.subtask_ended)
core.DEPENDENCY_ENDED_HOOKS.append(dependencies.dependency_ended)
