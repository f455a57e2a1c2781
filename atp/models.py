"""ATP's tables: task types, task instances, their responses and logs, and the daemons."""

import uuid
from datetime import timedelta
from functools import reduce
from operator import or_

from django.db import models
from django.db.models import Q
from django.utils import timezone

from atp.validation import (
    MAX_COUNT,
    MAX_MOMENT,
    MAX_SECONDS,
    MIN_MOMENT,
    PRIORITY_MAX,
    PRIORITY_MIN,
)


class Status(models.IntegerChoices):
    """A task instance's status; the codes are part of ATP's public contract."""

    UNDEFINED = 0, "UNDEFINED"  # never set: a row that no tracker call has touched yet
    ACCEPTED = 1, "ACCEPTED"  # waiting in the queue, possibly until a future run_after
    SCHEDULED = 2, "SCHEDULED"  # claimed by a daemon (server_id), not started yet
    RUNNING = 3, "RUNNING"  # its handler runs
    PAUSED = 4, "PAUSED"  # paused by its handler
    FINISHED = 5, "FINISHED"  # terminal: success
    FAILED = 6, "FAILED"  # terminal: failure
    REVOKED = 7, "REVOKED"  # terminal: cancelled, aborted or expired
    WAITING = 8, "WAITING"  # the handler returned; the task waits for its subtasks
    BLOCKED = 9, "BLOCKED"  # enqueued, waits for the tasks it depends on (never claimed)


#: Statuses a task never leaves.
TERMINAL = frozenset({Status.FINISHED, Status.FAILED, Status.REVOKED})
#: Statuses of a task owned by a daemon (server_id set); the zombie sweep watches these.
#: They are also the places of a concurrency key (``TaskType.concurrency_limit``).
ACTIVE = frozenset({Status.SCHEDULED, Status.RUNNING, Status.PAUSED})
#: Statuses in which a task holds its ``unique_key``: every status before it ends.
UNIQUE_HELD = frozenset(Status) - TERMINAL - {Status.UNDEFINED}

#: The status graph: which status may follow which. Anything else is InvalidTransition.
#: ACCEPTED as a target is a (re-)enqueue: a restart, a retry or a claim given back.
TRANSITIONS: dict[int, frozenset[int]] = {
    Status.UNDEFINED: frozenset({Status.ACCEPTED, Status.BLOCKED}),
    # Released when its dependencies finished, or revoked when one failed.
    Status.BLOCKED: frozenset({Status.ACCEPTED, Status.REVOKED}),
    Status.ACCEPTED: frozenset({Status.SCHEDULED, Status.REVOKED}),
    Status.SCHEDULED: frozenset({Status.RUNNING, Status.ACCEPTED, Status.FAILED, Status.REVOKED}),
    Status.RUNNING: frozenset(
        {
            Status.PAUSED,
            Status.FINISHED,
            Status.FAILED,
            Status.REVOKED,
            Status.ACCEPTED,
            Status.WAITING,
        }
    ),
    Status.PAUSED: frozenset(
        {Status.RUNNING, Status.FINISHED, Status.FAILED, Status.REVOKED, Status.ACCEPTED}
    ),
    Status.WAITING: frozenset({Status.FINISHED, Status.FAILED, Status.REVOKED}),
    Status.FINISHED: frozenset(),
    Status.FAILED: frozenset(),
    Status.REVOKED: frozenset(),
}


def sources_of(target: int) -> frozenset[int]:
    """Return the statuses from which a task may move to ``target``."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


def _per_type(timefield: str, cutoffs: dict[int, object]) -> Q:
    """OR together one ``type = t AND timefield < cutoff(t)`` condition per task type.

    Types are few, so one OR-ed query beats a query per type and stays portable (no
    interval arithmetic, which SQLite lacks).
    """
    if not cutoffs:
        return Q(pk__in=[])
    return reduce(
        or_, (Q(type_id=type_id, **{f"{timefield}__lt": cut}) for type_id, cut in cutoffs.items())
    )


class TaskTypeQuerySet(models.QuerySet):
    """Task types by the options the sweeps and queue limits look at."""

    def with_retention(self):
        """Types whose finished tasks are deleted after ``timeret`` seconds."""
        return self.filter(timeret__gt=0)

    def sharing_global_queue(self):
        """Types without a queue limit of their own: they share ``ATP['MAX_QUEUE_SIZE']``."""
        return self.filter(max_queue_size__isnull=True)


class TaskType(models.Model):
    """A kind of task: the handler that runs it and the limits that apply to it."""

    identifier = models.CharField(max_length=64, unique=True)
    handler = models.CharField(max_length=1024, help_text="Dotted path of the handler callable.")
    timeout = models.FloatField(
        default=3600.0, help_text="Seconds without an update after which a task is a zombie."
    )
    timeret = models.FloatField(
        default=-1.0, help_text="Seconds a finished task is kept; -1 keeps it forever."
    )
    maxrestart = models.PositiveIntegerField(
        default=2, help_text="Restarts (timeout, lost daemon) before the task fails."
    )
    priority = models.IntegerField(default=0, help_text="Default priority; higher runs first.")
    queue = models.CharField(max_length=64, default="default")
    max_queue_size = models.PositiveIntegerField(
        null=True, blank=True, help_text="Waiting tasks allowed for this type; empty = global."
    )
    max_retries = models.PositiveIntegerField(default=0)
    retry_backoff = models.FloatField(default=0.0, help_text="Base delay of retries in seconds.")
    retry_backoff_max = models.FloatField(default=600.0, help_text="Cap of the retry delay.")
    rate_limit = models.CharField(max_length=32, blank=True, help_text='For example "10/m".')
    soft_time_limit = models.FloatField(null=True, blank=True)
    hard_time_limit = models.FloatField(null=True, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Handler-specific options.")
    concurrency_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most tasks of one concurrency key SCHEDULED/RUNNING/PAUSED at once, across "
        "all daemons; empty = no limit.",
    )
    # db_default: raw INSERTs (benchmarks, fixtures) that do not name the column still work.
    paused = models.BooleanField(
        default=False, db_default=False, help_text="No daemon claims this type's tasks."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaskTypeQuerySet.as_manager()

    class Meta:
        ordering = ["identifier"]
        # The bounds of atp.validation, kept by the database too. On PostgreSQL NaN sorts
        # above every number, so each upper bound also keeps NaN out.
        constraints = [
            models.CheckConstraint(
                condition=Q(timeout__gt=0, timeout__lte=MAX_SECONDS), name="atp_tasktype_timeout"
            ),
            models.CheckConstraint(
                condition=Q(timeret=-1) | Q(timeret__gt=0, timeret__lte=MAX_SECONDS),
                name="atp_tasktype_timeret",
            ),
            models.CheckConstraint(
                condition=Q(retry_backoff__gte=0, retry_backoff__lte=MAX_SECONDS)
                & Q(retry_backoff_max__gte=0, retry_backoff_max__lte=MAX_SECONDS),
                name="atp_tasktype_retry_backoff",
            ),
            models.CheckConstraint(
                condition=(
                    Q(soft_time_limit__isnull=True)
                    | Q(soft_time_limit__gt=0, soft_time_limit__lte=MAX_SECONDS)
                )
                & (
                    Q(hard_time_limit__isnull=True)
                    | Q(hard_time_limit__gt=0, hard_time_limit__lte=MAX_SECONDS)
                ),
                name="atp_tasktype_time_limits",
            ),
            models.CheckConstraint(
                condition=Q(priority__gte=PRIORITY_MIN, priority__lte=PRIORITY_MAX),
                name="atp_tasktype_priority",
            ),
            models.CheckConstraint(
                condition=Q(maxrestart__lte=MAX_COUNT, max_retries__lte=MAX_COUNT)
                & (Q(max_queue_size__isnull=True) | Q(max_queue_size__lte=MAX_COUNT)),
                name="atp_tasktype_counts",
            ),
            models.CheckConstraint(
                condition=Q(concurrency_limit__isnull=True) | Q(concurrency_limit__gte=1),
                name="atp_tasktype_concurrency_limit_gte_1",
            ),
        ]

    def __str__(self):
        return self.identifier

    @property
    def maxstart(self) -> int:
        """Attempts a task of this type may make: the first run plus ``maxrestart`` restarts."""
        return 1 + self.maxrestart


#: The claim order, written once: higher priority first, then the earliest due, then the
#: oldest. ``TaskInstanceQuerySet.ready``, the ready index (``atp_task_ready``) and the claim
#: statement (``atp.sql.claim``, through its ``order_by``) all use it.
CLAIM_ORDER = ("-priority", "run_after", "id")


class TaskInstanceQuerySet(models.QuerySet):
    """Task instances by state; every sweep and claim query starts here."""

    def waiting(self):
        """Tasks in the queue (ACCEPTED), due or not."""
        return self.filter(status=Status.ACCEPTED)

    def ready(self, now=None):
        """Waiting tasks that are due, in claim order: priority, then run_after, then id."""
        now = now or timezone.now()
        return self.filter(status=Status.ACCEPTED, run_after__lte=now).order_by(*CLAIM_ORDER)

    def active(self):
        """Tasks a daemon owns: SCHEDULED, RUNNING or PAUSED."""
        return self.filter(status__in=ACTIVE)

    def live(self):
        """Tasks that have not ended: the predicate of the small partial index ``atp_task_live``."""
        return self.exclude(status__in=sorted(TERMINAL))

    def claimed_by(self, server_id):
        """Active tasks owned by the daemon ``server_id``."""
        return self.active().filter(server_id=str(server_id))

    def terminal(self):
        """Tasks that ended: FINISHED, FAILED or REVOKED."""
        return self.filter(status__in=TERMINAL)

    def stale(self, now=None, worker_timeout=None):
        """Zombies: active tasks not updated for longer than their type's ``timeout``.

        Tasks owned by a live daemon (a heartbeat within ``worker_timeout`` seconds) are
        not zombies here, however old their last update: that daemon kills its silent
        handlers itself (``atp.daemon.limits``); re-enqueueing them while they run would run
        the task twice.
        """
        now = now or timezone.now()
        cutoffs = {
            type_id: now - timedelta(seconds=timeout)
            for type_id, timeout in TaskType.objects.values_list("id", "timeout")
        }
        stale = self.active().filter(_per_type("updated_at", cutoffs))
        if worker_timeout is not None:
            live = Worker.objects.alive(now - timedelta(seconds=worker_timeout))
            stale = stale.exclude(server_id__in=live.values("server_id"))
        return stale

    def unstarted(self, now=None, claim_timeout=60.0):
        """SCHEDULED tasks claimed more than ``claim_timeout`` seconds ago and never started."""
        now = now or timezone.now()
        return self.filter(
            status=Status.SCHEDULED, updated_at__lt=now - timedelta(seconds=claim_timeout)
        )

    def retired(self, now=None):
        """Ended tasks older than their type's retention time (``timeret`` > 0)."""
        now = now or timezone.now()
        cutoffs = {
            type_id: now - timedelta(seconds=timeret)
            for type_id, timeret in TaskType.objects.with_retention().values_list("id", "timeret")
        }
        return self.terminal().filter(_per_type("finished_at", cutoffs))


class TaskInstance(models.Model):
    """One task: its input, its place in the queue and its progress through the statuses."""

    # No index of its own: the (type, identifier) unique constraint's index starts with it.
    type = models.ForeignKey(
        TaskType, on_delete=models.PROTECT, related_name="instances", db_index=False
    )
    identifier = models.CharField(max_length=64)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.PositiveSmallIntegerField(choices=Status.choices, default=Status.UNDEFINED)
    input = models.JSONField(null=True, blank=True)
    priority = models.IntegerField(default=0)
    queue = models.CharField(max_length=64, default="default")
    run_after = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(null=True, blank=True)
    server_id = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveIntegerField(
        default=0, help_text="Starts so far; the current attempt number is the fencing token."
    )
    retries = models.PositiveIntegerField(default=0)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        db_index=False,  # see the partial index atp_task_parent
    )
    progress = models.JSONField(null=True, blank=True)
    # Flow control (atp.tracker.unique, atp.tracker.concurrency); NULL = no key, which keeps
    # key-less tasks out of the partial unique index and lets raw INSERTs that do not name
    # the columns (the benchmarks') work. An empty key is refused at enqueue.
    unique_key = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    concurrency_key = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    # The handler's return value when it is JSON (dependent tasks read it); a return value
    # that is not JSON leaves it null and only its repr is kept, in the task-succeeded event.
    result = models.JSONField(
        null=True, blank=True, help_text="The handler's return value, when it is JSON."
    )
    # Set (under the row lock) when a task is enqueued that depends on this one, so that
    # ending this task takes the path that releases its dependents (atp.tracker.dependencies).
    # db_default: the one-statement enqueue (atp.sql.enqueue) names only the columns it sets.
    has_dependents = models.BooleanField(default=False, db_default=False)
    workflow = models.ForeignKey(
        "Workflow",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        db_index=False,  # see the partial index atp_task_workflow
    )
    # Requests from control (abort, revoke with terminate) that the owning daemon acts on.
    abort_requested_at = models.DateTimeField(null=True, blank=True)
    kill_signal = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Signal the owning daemon sends to the handler."
    )
    enqueued_at = models.DateTimeField(default=timezone.now)
    received_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TaskInstanceQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["type", "identifier"], name="atp_task_type_identifier"),
            # At most one task per type and unique key that has not ended: the database's
            # guarantee behind the enqueue's key lock (atp.tracker.unique). Partial, so
            # tasks without a key and ended tasks cost it nothing.
            models.UniqueConstraint(
                fields=["type", "unique_key"],
                condition=Q(unique_key__isnull=False, status__in=sorted(UNIQUE_HELD)),
                name="atp_task_unique_active",
            ),
            # The bounds of atp.validation: a run_after past year 9999 in UTC could not be
            # read back into Python, and would break every page that lists the task.
            models.CheckConstraint(
                condition=Q(priority__gte=PRIORITY_MIN, priority__lte=PRIORITY_MAX),
                name="atp_task_priority",
            ),
            models.CheckConstraint(
                condition=Q(run_after__gte=MIN_MOMENT, run_after__lte=MAX_MOMENT)
                & (Q(expires__isnull=True) | Q(expires__gte=MIN_MOMENT, expires__lte=MAX_MOMENT)),
                name="atp_task_moments",
            ),
        ]
        indexes = [
            # The claim query: waiting rows in claim order. Partial, so it holds only the
            # queue, not the history, and stays small however many tasks have run.
            models.Index(
                fields=list(CLAIM_ORDER),
                condition=Q(status=Status.ACCEPTED),
                name="atp_task_ready",
            ),
            # The zombie sweep and the lost-daemon recovery: active rows by age and owner.
            models.Index(
                fields=["updated_at"],
                condition=Q(status__in=sorted(ACTIVE)),
                name="atp_task_active_age",
            ),
            models.Index(
                fields=["server_id"],
                condition=Q(status__in=sorted(ACTIVE)),
                name="atp_task_active_owner",
            ),
            # The admin's counts of tasks that have not ended (atp/admin/stats.py): small,
            # however long the history, and read without touching ended rows.
            models.Index(
                fields=["type", "status"],
                condition=~Q(status__in=sorted(TERMINAL)),
                name="atp_task_live",
            ),
            # Subtasks of a parent. Partial: most tasks have no parent, and an index of
            # their NULLs would cost every write of every task for nothing.
            models.Index(
                fields=["parent"], condition=Q(parent__isnull=False), name="atp_task_parent"
            ),
            # unique_for: the newest tasks of a type and unique key, ended or not.
            models.Index(
                fields=["type", "unique_key", "enqueued_at"],
                condition=Q(unique_key__isnull=False),
                name="atp_task_unique_recent",
            ),
            # A workflow's tasks; partial, as most tasks belong to none.
            models.Index(
                fields=["workflow"],
                condition=Q(workflow__isnull=False),
                name="atp_task_workflow",
            ),
            # (PostgreSQL also has atp_task_enqueued_brin, a BRIN index on enqueued_at for
            # the admin's date filter: migration 0015; the query sorts: migration 0002.)
            # The retention sweep: ended rows by type and end time.
            models.Index(
                fields=["type", "finished_at"],
                condition=Q(status__in=sorted(TERMINAL)),
                name="atp_task_retention",
            ),
        ]

    def __str__(self):
        return f"{self.type_id and self.type.identifier}::{self.identifier}"

    @property
    def status_name(self) -> str:
        """The status as its contract name, for example ``"RUNNING"``."""
        return Status(self.status).label

    @property
    def is_terminal(self) -> bool:
        """Whether the task has ended and will never change status again."""
        return self.status in TERMINAL


class Workflow(models.Model):
    """Tasks enqueued together by ``atp.workflows`` (a chain, group or chord), seen as one."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255, blank=True, help_text="What the canvas was.")
    end_task = models.ForeignKey(
        TaskInstance,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The task whose end is the workflow's end (none for a bare group).",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"workflow {self.pk} ({self.name})" if self.name else f"workflow {self.pk}"


class Dependency(models.Model):
    """An edge of a workflow: ``task`` is claimed only once ``depends_on`` has ended.

    ``depends_on`` becomes null when that task is deleted before its dependent was
    released; the edge then counts as a revoked dependency.
    """

    task = models.ForeignKey(TaskInstance, on_delete=models.CASCADE, related_name="dependencies")
    depends_on = models.ForeignKey(
        TaskInstance, null=True, on_delete=models.SET_NULL, related_name="dependent_edges"
    )
    position = models.PositiveIntegerField(help_text="Order given at enqueue (results order).")
    run_on_failure = models.BooleanField(
        default=False, help_text='on_dependency_failure="run": run even if this one failed.'
    )

    class Meta:
        ordering = ["task", "position"]
        constraints = [
            models.UniqueConstraint(fields=["task", "position"], name="atp_dependency_position"),
        ]
        indexes = [models.Index(fields=["depends_on"], name="atp_dependency_depends_on")]

    def __str__(self):
        return f"{self.task_id} after {self.depends_on_id}"


class Response(models.Model):
    """The response a task's handler stored: bytes plus their MIME type."""

    instance = models.OneToOneField(TaskInstance, on_delete=models.CASCADE, related_name="response")
    data = models.BinaryField()
    mime_type = models.CharField(max_length=255, default="text/xml")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.instance_id}: {self.mime_type}, {len(self.data)} bytes"

    @property
    def text(self) -> str:
        """The data decoded as UTF-8 (undecodable bytes replaced)."""
        return bytes(self.data).decode("utf-8", errors="replace")


class LogRecord(models.Model):
    """One entry of a task's history: a transition (or progress report) and its Celery event."""

    # No index of its own: atp_log_instance_time starts with it.
    instance = models.ForeignKey(
        TaskInstance, on_delete=models.CASCADE, related_name="log", db_index=False
    )
    time = models.DateTimeField(default=timezone.now)
    status = models.PositiveSmallIntegerField(choices=Status.choices)
    message = models.TextField(blank=True)
    event = models.CharField(max_length=32, blank=True, help_text="Celery event type.")
    fields = models.JSONField(default=dict, blank=True, help_text="Celery event fields.")

    class Meta:
        ordering = ["time", "id"]
        indexes = [models.Index(fields=["instance", "time"], name="atp_log_instance_time")]

    def __str__(self):
        return f"{self.instance_id} {self.time:%Y-%m-%d %H:%M:%S} {self.event or self.status}"


class WorkerQuerySet(models.QuerySet):
    """Daemons by liveness."""

    def running(self):
        """Daemons that have not said they stopped."""
        return self.filter(stopped_at__isnull=True)

    def alive(self, cutoff):
        """Running daemons whose last heartbeat is newer than ``cutoff``."""
        return self.running().filter(heartbeat_at__gte=cutoff)

    def lost(self, cutoff):
        """Running daemons whose last heartbeat is older than ``cutoff``: presumed dead."""
        return self.running().filter(heartbeat_at__lt=cutoff)


class Worker(models.Model):
    """An ``atpd`` daemon process, registered at start and kept alive by its heartbeats."""

    server_id = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Which process holds the row now: a random token per daemon start. A daemon writes its
    # row only while the token is its own, so another process that reuses the server id
    # can never make it believe it was declared lost.
    instance = models.CharField(max_length=32, blank=True, default="")

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self):
        return f"{self.hostname} ({self.server_id})"


class QueuePause(models.Model):
    """A paused queue: no daemon claims its tasks while the row exists (atp.tracker.pausing).

    A queue has no table of its own (it is a name tasks carry), so a pause is a row: it can
    exist before the queue's first task, and resuming deletes it.
    """

    queue = models.CharField(max_length=64, unique=True)
    paused_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["queue"]

    def __str__(self):
        return f"queue {self.queue} (paused)"


class EventCursor(models.Model):
    """How far the relay has published the stored events to the broker (one row per relay).

    The relay locks its row while it publishes, so with several daemons each event goes
    out once, and moves ``position`` (the last LogRecord id published) in that transaction.
    """

    name = models.CharField(max_length=64, unique=True)
    position = models.BigIntegerField(default=0, help_text="Last LogRecord id published.")
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.name} at {self.position}"


class EndTally(models.Model):
    """Tasks of a type that ended in a status, as counted by the metrics (atp.query.ended).

    Only ever grows: a task deleted by the retention sweep stays counted, so Prometheus sees
    a counter it can take the rate of. Written by the scrapes, never by the daemon.
    """

    type = models.ForeignKey(TaskType, on_delete=models.CASCADE, db_index=False)
    status = models.PositiveSmallIntegerField(choices=Status.choices)
    total = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["type", "status"], name="atp_endtally_type_status")
        ]

    def __str__(self):
        return f"{self.type_id} {Status(self.status).label}: {self.total}"


class EndTallyMark(models.Model):
    """How far the tallies have counted (one row): every end up to ``counted_through``.

    Each scrape moves it with a conditional UPDATE (from the time it read), so of two
    scrapes at once one counts the ends in between and the other counts nothing.
    """

    counted_through = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"ends counted through {self.counted_through}"


class ScheduleQuerySet(models.QuerySet):
    """Schedules by what the ticking daemons and the settings sync ask."""

    def upcoming(self, until):
        """Enabled schedules whose next slot is at or before ``until`` (the due index)."""
        return self.filter(enabled=True, next_slot__lte=until)

    def declared(self):
        """Schedules that came from ``ATP["SCHEDULES"]``."""
        return self.filter(source=Schedule.Source.SETTINGS)


class Schedule(models.Model):
    """A periodic task: a cron (in a time zone) or an interval, and the task type it runs.

    Each slot's run is an ordinary task named ``<name>@<slot>`` (see ``atp.schedules``).
    """

    class CatchUp(models.TextChoices):
        """Which missed slots (no daemon ran, or the schedule was disabled) still run."""

        ONE = "one"  # the latest missed slot, once
        ALL = "all"  # every missed slot (at most ATP["SCHEDULE_CATCH_UP_MAX"])
        SKIP = "skip"  # none

    class Source(models.TextChoices):
        """Where the schedule was declared; the settings sync removes only its own."""

        CODE = "code"  # register_schedule or the admin
        SETTINGS = "settings"  # ATP["SCHEDULES"]

    name = models.CharField(max_length=40, unique=True)
    task_type = models.ForeignKey(TaskType, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(
        max_length=128, blank=True, help_text='Five cron fields, or an alias such as "@daily".'
    )
    every = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds between slots, aligned to the Unix epoch."
    )
    input = models.JSONField(null=True, blank=True, help_text="Each run's input.")
    enabled = models.BooleanField(default=True)
    catch_up = models.CharField(max_length=8, choices=CatchUp.choices, default=CatchUp.ONE)
    options = models.JSONField(
        default=dict, blank=True, help_text='enqueue_task options of the runs: {"priority": 5}.'
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.CODE)
    checked_until = models.DateTimeField(
        default=timezone.now,
        help_text="Slots up to here are handled: run, skipped, or older than the schedule.",
    )
    next_slot = models.DateTimeField(null=True, blank=True)
    # The id of the latest run, not a foreign key: deleting tasks (retention, by the
    # thousand) must not pay for a look at the schedules.
    last_task_id = models.BigIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # Last: in the class body, the name hides django.utils.timezone from the fields above.
    timezone = models.CharField(
        max_length=64, default="UTC", help_text="IANA time zone the cron is read in."
    )

    objects = ScheduleQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(cron="") & Q(every__gte=1)) | (~Q(cron="") & Q(every__isnull=True)),
                name="atp_schedule_cron_xor_every",
                violation_error_message="give exactly one of cron and every",
            ),
        ]
        indexes = [
            # The ticks' query: enabled schedules by next slot.
            models.Index(fields=["next_slot"], condition=Q(enabled=True), name="atp_schedule_due"),
        ]

    def __str__(self):
        return self.name

    def describe(self) -> str:
        """The timing in words: ``cron '30 2 * * *' in Europe/Berlin`` or ``every 60 s``."""
        if self.every is not None:
            return f"every {self.every} s"
        return f"cron {self.cron!r} in {self.timezone}"
