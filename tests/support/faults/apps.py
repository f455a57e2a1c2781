"""Plants the faults named in ``ATP_TEST_FAULTS`` when Django is ready (see the package doc)."""

import json
import os
import signal

from django.apps import AppConfig


class PlantedFault(ValueError):
    """The error a planted fault raises."""


class FaultsConfig(AppConfig):
    """Wraps the daemon's step functions with the faults the environment asks for."""

    name = "tests.support.faults"
    label = "atp_test_faults"

    def ready(self):
        """Plant every fault named in ``ATP_TEST_FAULTS``."""
        faults = json.loads(os.environ.get("ATP_TEST_FAULTS", "{}"))
        for name, argument in faults.items():
            PLANTERS[name](argument)


def _identifiers(task_ids) -> dict[int, str]:
    from atp.models import TaskInstance

    return dict(TaskInstance.objects.filter(pk__in=list(task_ids)).values_list("id", "identifier"))


def _claim(type_identifier):
    """Claiming fails whenever the claim would take a task of ``type_identifier``."""
    from atp import tracker

    original = tracker.claim_tasks

    def claim_tasks(*args, **kwargs):
        attempts = original(*args, **kwargs)
        if any(attempt.type == type_identifier for attempt in attempts):
            raise PlantedFault(f"planted: claiming {type_identifier} fails")
        return attempts

    tracker.claim_tasks = claim_tasks


def _outcome(identifier_prefix):
    """Recording fails whenever a batch holds the outcome of a task named ``prefix…``."""
    from atp.daemon import outcomes as recording

    original = recording.record_all

    def record_all(outcomes):
        names = _identifiers(outcome.task_id for outcome in outcomes)
        if any(name.startswith(identifier_prefix) for name in names.values()):
            raise PlantedFault(f"planted: recording {identifier_prefix}… fails")
        return original(outcomes)

    recording.record_all = record_all


def _hand_over(identifier_prefix):
    """The pool refuses any batch holding an attempt of a task named ``prefix…``."""
    from atp.daemon.pool import ProcessPool
    from atp.daemon.thread_pool import ThreadPool

    for cls in (ProcessPool, ThreadPool):
        original = cls.submit_many

        def submit_many(self, attempts, original=original):
            if any(attempt.identifier.startswith(identifier_prefix) for attempt in attempts):
                raise PlantedFault(f"planted: handing {identifier_prefix}… over fails")
            return original(self, attempts)

        cls.submit_many = submit_many


def _failing(module, name, times):
    """``module.name`` raises PlantedFault on its first ``times`` calls."""
    original = getattr(module, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise PlantedFault(f"planted: {name} call {calls['n']} of {times} fails")
        return original(*args, **kwargs)

    setattr(module, name, failing)


def _sweep(times):
    from atp import tracker

    _failing(tracker, "reenqueue_zombie_tasks", times)


def _heartbeat(times):
    from atp.daemon import workers

    _failing(workers, "beat", times)


def _relay(times):
    from atp.daemon import relay

    _failing(relay, "publish_pending", times)


def _freeze_on_record(identifier):
    """The daemon stops itself (SIGSTOP) while its transaction holds the task's row lock.

    It happens when it records the first attempt of the task named ``identifier``: the row
    is locked (the outcome was written, not committed) and the daemon freezes, as a
    process paused by a debugger, a VM pause or a half-open connection would.
    """
    from atp.daemon import outcomes as recording

    original = recording.record_all

    def record_all(outcomes):
        results = original(outcomes)
        names = _identifiers(outcome.task_id for outcome in outcomes if outcome.attempt == 1)
        if identifier in names.values():
            os.kill(os.getpid(), signal.SIGSTOP)
        return results

    recording.record_all = record_all


PLANTERS = {
    "claim": _claim,
    "outcome": _outcome,
    "hand-over": _hand_over,
    "sweep": _sweep,
    "heartbeat": _heartbeat,
    "relay": _relay,
    "freeze-on-record": _freeze_on_record,
}
