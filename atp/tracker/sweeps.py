"""Sweeps: re-enqueue (or fail) lost attempts, and delete tasks past their retention."""

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import signals
from django.utils import timezone

from atp import events, sql
from atp.conf import settings
from atp.models import TERMINAL, Status, TaskInstance, TaskType, Worker
from atp.sql.cleanup import DELETE_RETIRED
from atp.tracker import pending
from atp.tracker.core import SweepEntry, _check_owner, _get_task, _join, _transition

logger = logging.getLogger("atp.tracker")


def reenqueue_zombie_tasks(message="", *, progress=None) -> list[SweepEntry]:
    """Recover tasks whose daemon stopped caring for them; return what was done.

    Two passes, each in short transactions that skip rows another sweeper holds:
    claims not started within ``ATP['CLAIM_TIMEOUT']`` go back to the queue without using
    up a restart; SCHEDULED/RUNNING/PAUSED tasks not updated for their type's ``timeout``
    (and not owned by a live daemon, which applies the timeout to its own handlers) are
    re-enqueued, or FAILED once they have used ``maxrestart`` restarts.

    Returns the seed's ``(task id, "type::identifier")`` pairs (``SweepEntry``), each
    with ``action`` "reenqueued" or "failed". ``progress(count)``, if given, hears after
    each batch how many tasks were handled so far (``atp_cleanup`` reports long runs).
    """
    now = timezone.now()

    def unstarted(task):
        age = (now - task.updated_at).total_seconds()
        return f"Claimed by {task.server_id} {age:.0f} s ago and never started."

    def stale(task):
        return f"No update for {task.type.timeout:g} s."

    done: list[SweepEntry] = []
    for tasks, reason, exception in (
        (TaskInstance.objects.unstarted(now, settings.CLAIM_TIMEOUT), unstarted, "claim timed out"),
        (TaskInstance.objects.stale(now, settings.WORKER_TIMEOUT), stale, "TimeoutError"),
    ):
        before = len(done)
        done += _sweep_batches(
            tasks,
            lambda task, reason=reason, exception=exception: SweepEntry(
                task.pk,
                str(task),
                restart_or_fail(task.pk, _join(message, reason(task)), exception=exception),
            ),
            progress and (lambda count, before=before: progress(before + count)),
        )
    return done


def _sweep_batches(queryset, act, progress=None) -> list[SweepEntry]:
    """Run ``act(task)`` on locked rows of ``queryset``, a batch per transaction."""
    done: list[SweepEntry] = []
    batch_size = settings.CLEANUP_BATCH_SIZE
    while True:
        with transaction.atomic():
            batch = list(
                queryset.select_for_update(skip_locked=True, of=("self",))
                .select_related("type")
                .order_by("pk")[:batch_size]
            )
            done += [act(task) for task in batch]
        if progress is not None:
            progress(len(done))
        if len(batch) < batch_size:
            return done


def restart_or_fail(task_id, reason, *, attempt=None, exception="TimeoutError") -> str:
    """Re-enqueue a task whose attempt was lost, or fail it once its restarts are used up.

    The one rule for every lost attempt (zombie timeout, hard time limit, crashed handler
    process, lost daemon): a claim never started goes back without using a restart; a
    started attempt uses one of the type's ``maxrestart`` restarts, and with none left the
    task ends FAILED with ``reason`` and a note saying so. Returns "reenqueued" or "failed"
    (or "revoked": its termination was requested, so it is not run again).
    """
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        _check_owner(task, attempt, None)
        if task.kill_signal is not None and task.status in (Status.RUNNING, Status.PAUSED):
            # revoke(terminate=True) was asked before the attempt was lost: no re-run.
            _transition(
                task.pk,
                Status.REVOKED,
                reason,
                fields=lambda task, moment: events.revoked_fields(True, task.kill_signal, False),
            )
            return "revoked"
        restarts_used = task.attempts - task.retries - 1
        fields = lambda task, moment: {"exception": exception, "traceback": ""}  # noqa: E731
        if task.status != Status.SCHEDULED and restarts_used >= task.type.maxrestart:
            note = (
                f"Failed on attempt {task.attempts}: its {task.type.maxrestart} restart(s) "
                "(maxrestart) are used up."
            )
            _transition(task.pk, Status.FAILED, _join(reason, note), fields=fields)
            logger.warning("%s failed after %d attempt(s): %s", task, task.attempts, reason)
            return "failed"
        if task.status == Status.SCHEDULED:
            note = "Given back to the queue (it never started; no restart used)."
        else:
            note = f"Re-enqueued: restart {restarts_used + 1} of {task.type.maxrestart}."
        requeued = _transition(
            task.pk,
            Status.ACCEPTED,
            _join(reason, note),
            event=events.TASK_RETRIED,
            changes=lambda task: {"server_id": "", "run_after": timezone.now()},
            fields=fields,
        )
        pending.after_requeue(requeued)  # its queue or type may have been paused meanwhile
        logger.warning("%s re-enqueued (attempt %d): %s", task, task.attempts, reason)
        return "reenqueued"


def recover_lost_workers(worker_timeout, message="", *, progress=None) -> list[SweepEntry]:
    """Re-enqueue (or fail) the tasks of daemons whose heartbeat is older than ``worker_timeout``.

    Each lost daemon is handled by one recoverer: its Worker row is locked with SKIP LOCKED.
    Its tasks are locked with SKIP LOCKED too: a daemon frozen in the middle of a
    transaction (SIGSTOP, a VM pause, a half-open connection) still holds the rows it was
    writing, and waiting for them would freeze the recoverer as well. Those are left for a
    later heartbeat (the server ends a frozen session after the daemons'
    ``idle_in_transaction_session_timeout``); the lost daemon's row is marked stopped, in
    the same transaction as its tasks' transitions, only once none is left. Returns
    ``SweepEntry`` pairs; ``progress(count)`` hears the count so far after each daemon.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=worker_timeout)
    done: list[SweepEntry] = []
    for worker_pk in Worker.objects.lost(cutoff).values_list("pk", flat=True):
        with transaction.atomic():
            worker = (
                Worker.objects.select_for_update(skip_locked=True)
                .lost(cutoff)
                .filter(pk=worker_pk)
                .first()
            )
            if worker is None:
                continue  # another daemon is recovering it, or it came back
            silence = (now - worker.heartbeat_at).total_seconds()
            reason = _join(
                message,
                f"Daemon {worker.server_id} (pid {worker.pid} on {worker.hostname}) lost: "
                f"no heartbeat for {silence:.0f} s.",
            )
            tasks = TaskInstance.objects.claimed_by(worker.server_id)
            recovered = []
            for task in (
                tasks.select_for_update(skip_locked=True, of=("self",))
                .select_related("type")
                .order_by("pk")
            ):
                action = restart_or_fail(task.pk, reason, exception="WorkerLostError")
                recovered.append(SweepEntry(task.pk, str(task), action))
            held = tasks.exclude(pk__in=[entry.task_id for entry in recovered]).count()
            if not held:
                worker.stopped_at = now
                worker.save(update_fields=["stopped_at"])
            done += recovered
        logger.warning(
            "%s: recovered %d task(s)%s",
            reason,
            len(recovered),
            f"; {held} locked by a transaction still open, left for later" if held else "",
        )
        if progress is not None:
            progress(len(done))
    return done


def reclaim_orphans(
    server_id, holding: dict[int, int], *, ran=True, message=""
) -> list[SweepEntry]:
    """Give back the tasks daemon ``server_id`` owns in the database but does not run.

    ``holding`` maps the task ids its pool holds to their attempt numbers. Any other
    SCHEDULED or RUNNING task claimed by ``server_id`` is an orphan: a claim committed
    while its reply was lost, or an earlier process with the same id. Each is handled under
    its row lock (SKIP LOCKED). With ``ran`` (an earlier process may have run it) the
    lost-attempt rule applies (``restart_or_fail``); without, the attempt surely never
    started, so the task goes back to the queue as it was before the claim: no restart
    used, and its attempt number is free again (no handler ever held it).
    """
    done: list[SweepEntry] = []
    with transaction.atomic():
        owned = (
            TaskInstance.objects.filter(
                server_id=str(server_id), status__in=(Status.SCHEDULED, Status.RUNNING)
            )
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("pk")
        )
        for task in owned:
            if holding.get(task.pk) == task.attempts:
                continue
            reason = _join(
                message,
                f"Daemon {server_id} does not run attempt {task.attempts}: its pool never got it "
                + (
                    "(an earlier process had this server id)."
                    if ran
                    else "(the reply to the claim was lost)."
                ),
            )
            if ran or task.status != Status.RUNNING:
                action = restart_or_fail(task.pk, reason, exception="WorkerLostError")
            else:
                requeued = _transition(
                    task.pk,
                    Status.ACCEPTED,
                    _join(reason, "Given back to the queue (it never started; no restart used)."),
                    event=events.TASK_RETRIED,
                    changes=lambda task: {
                        "server_id": "",
                        "run_after": timezone.now(),
                        "attempts": task.attempts - 1,
                    },
                    fields=lambda task, moment: {"exception": "WorkerLostError", "traceback": ""},
                )
                pending.after_requeue(requeued)
                action = "given back"
            done.append(SweepEntry(task.pk, str(task), action))
    return done


def delete_retired_tasks(*, progress=None) -> list[SweepEntry]:
    """Delete ended tasks older than their type's ``timeret``, in batches.

    Returns the seed's ``(task id, "type::identifier")`` pairs (``SweepEntry``, ``action``
    "deleted"); ``progress(count)`` hears the count so far after each batch. Each batch is
    a transaction of its own (``retired_task_deletions``).
    """
    done: list[SweepEntry] = []
    for batch in retired_task_deletions():
        done += batch
        if progress is not None:
            progress(len(done))
    if done:
        logger.info("Deleted %d retired task(s)", len(done))
    return done


def retired_task_deletions(batch_size: int | None = None) -> Iterator[list[SweepEntry]]:
    """Delete retired tasks one batch per step of the iteration; yield each batch's entries.

    Each batch (``batch_size`` tasks, by default ``ATP['CLEANUP_BATCH_SIZE']``) is a
    transaction of its own and starts
    past the last id of the one before; rows another transaction holds are left for the
    next sweep. The iteration ends after a batch that was not full. A caller with other work
    (the daemon's loop) pulls a few batches at a time and goes on with the rest later. On
    PostgreSQL a batch is one statement (``atp.sql.cleanup``), unless a receiver listens to
    the tasks' delete signals, which only the ORM's cascade sends.
    """
    batch_size = batch_size or settings.CLEANUP_BATCH_SIZE
    in_sql = sql.is_postgresql() and not (
        signals.pre_delete.has_listeners(TaskInstance)
        or signals.post_delete.has_listeners(TaskInstance)
    )
    delete_batch = _delete_retired_in_sql if in_sql else _delete_retired_with_orm
    after = 0
    while True:
        batch = delete_batch(batch_size, after)
        yield batch
        if len(batch) < batch_size:
            return
        after = batch[-1].task_id


def _delete_retired_with_orm(batch_size: int, after: int) -> list[SweepEntry]:
    with transaction.atomic():
        batch = list(
            TaskInstance.objects.retired()
            .filter(pk__gt=after)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("type")
            .order_by("pk")[:batch_size]
        )
        TaskInstance.objects.filter(pk__in=[task.pk for task in batch]).delete()
    return [SweepEntry(task.pk, str(task), "deleted") for task in batch]


def _delete_retired_in_sql(batch_size: int, after: int) -> list[SweepEntry]:
    now = timezone.now()
    retention = TaskType.objects.with_retention().values_list("id", "timeret")
    type_ids, cutoffs = [], []
    for type_id, timeret in retention:
        type_ids.append(type_id)
        cutoffs.append(now - timedelta(seconds=timeret))
    if not type_ids:
        return []
    ended = ", ".join(str(int(status)) for status in sorted(TERMINAL))
    params: dict[str, Any] = {
        "type_ids": type_ids,
        "cutoffs": cutoffs,
        "after": after,
        "limit": batch_size,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(DELETE_RETIRED.format(ended=ended), params)
        rows = sorted(cursor.fetchall())  # RETURNING keeps no order
    return [
        SweepEntry(task_id, f"{type_name}::{identifier}", "deleted")
        for task_id, type_name, identifier in rows
    ]
