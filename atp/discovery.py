"""Where ``@task`` functions are found, and how their task types reach the database.

- **The registry.** Every ``@task`` adds its Task here when its module is imported. Two
  different functions under one name are kept aside for the system check (``atp.E110``),
  not silently overwritten.
- **Autodiscovery.** ``autodiscover()`` imports the ``tasks`` module of every installed app
  (Django's ``autodiscover_modules``, as Celery's ``autodiscover_tasks``), so tasks declared
  there are known without anyone importing them.
- **Sync.** ``sync_task_types()`` creates each known task's type, or updates a type whose
  handler or decorator options differ from the code. Options the decorator does not set are
  left as they are, so a rate limit or time limit set at run time (``atp.control``, the
  admin) is not undone by the next daemon start. It runs when a daemon starts, and
  ``ensure_registered`` runs it lazily at the first enqueue of each task in a process.
- **Stale types.** A task type whose handler no longer imports (the function was renamed or
  removed) is never deleted: ``stale_task_types()`` lists them, the ``atp.W110`` check
  reports them, and the daemon logs them at start.
"""

from __future__ import annotations

import logging
import threading

from django.utils.module_loading import autodiscover_modules, import_string

from atp.exceptions import InvalidInput

logger = logging.getLogger("atp.discovery")

#: Task name -> Task, for every @task imported in this process.
_registry: dict = {}
#: Task name -> the other handlers declared under that name (for the system check).
_clashes: dict[str, set[str]] = {}
#: Names whose type this process has created or checked (``ensure_registered``).
_synced: set[str] = set()
_lock = threading.Lock()
_discovered = False


def register(task) -> None:
    """Add a Task to the registry; a second function under its name is noted as a clash."""
    with _lock:
        known = _registry.get(task.name)
        if known is not None and known.handler != task.handler:
            _clashes.setdefault(task.name, {known.handler}).add(task.handler)
            logger.error(
                "Two tasks are named %r: %s and %s; give one of them another name=",
                task.name,
                known.handler,
                task.handler,
            )
            return
        _registry[task.name] = task
        _synced.discard(task.name)


def registered() -> dict:
    """Every Task known in this process, by name (after ``autodiscover``)."""
    autodiscover()
    return dict(_registry)


def clashes() -> dict[str, list[str]]:
    """Names declared by more than one function: name -> their handler paths, sorted."""
    autodiscover()
    return {name: sorted(handlers) for name, handlers in _clashes.items()}


def autodiscover() -> None:
    """Import every installed app's ``tasks`` module once (``@task`` registers on import)."""
    global _discovered
    if _discovered:
        return
    autodiscover_modules("tasks")
    _discovered = True


def check_type_options(task) -> None:
    """Check a decorator's name and type options now (InvalidInput), not at the first enqueue.

    Skipped while Django's apps load (the checks need the models); ``_sync`` checks again.
    """
    from django.apps import apps

    if not apps.ready:
        return
    from atp.tracker import clean_task_type

    # The handler is checked by importing it, which this module cannot be yet (it is being
    # imported now): any importable callable stands in; the options are what is checked.
    clean_task_type(task.name, "atp.discovery.autodiscover", **task.type_options)


def sync_task_types() -> list[str]:
    """Create or update the task type of every known task; return what it did, per type."""
    done = []
    for task in registered().values():
        if task.name in _clashes:
            continue  # the system check reports it; neither function wins silently
        done.append(_sync(task))
    return [line for line in done if line]


def ensure_registered(task, again: bool = False) -> None:
    """Make sure ``task``'s type exists and matches the code, once per process and name.

    ``again`` checks even if this process did already (the type was deleted meanwhile).
    """
    if task.name in _synced and not again:
        return
    autodiscover()
    if task.name in _clashes:
        raise InvalidInput(
            f"two tasks are named {task.name!r} ({', '.join(sorted(_clashes[task.name]))}); "
            "give one of them another name="
        )
    _sync(task)


def _sync(task) -> str:
    """Create or update one task's type; return a line for the log ('' if unchanged)."""
    from atp import tracker
    from atp.models import TaskType

    current = TaskType.objects.filter(identifier=task.name).first()
    if current is None:
        tracker.register_task_type(task.name, task.handler, **task.type_options)
        _synced.add(task.name)
        return f"created task type {task.name} -> {task.handler}"
    _, wanted = tracker.clean_task_type(task.name, task.handler, **task.type_options)
    given = {"handler", *task.type_options} & set(wanted)
    # register_task_type's named parameters: only compared when the decorator sets them.
    changes = {field: wanted[field] for field in given if getattr(current, field) != wanted[field]}
    if changes:
        for field, value in changes.items():
            setattr(current, field, value)
        current.save(update_fields=[*changes, "updated_at"])
        line = f"updated task type {task.name}: {', '.join(sorted(changes))}"
    else:
        line = ""
    _synced.add(task.name)
    return line


def stale_task_types() -> list[tuple[str, str, str]]:
    """Task types whose handler no longer imports: ``(identifier, handler, why)`` each."""
    from atp.models import TaskType

    stale = []
    for identifier, handler in TaskType.objects.values_list("identifier", "handler"):
        try:
            target = import_string(handler)
        except Exception as exc:  # any import error: a module with a bug imports no handler
            stale.append((identifier, handler, f"{type(exc).__name__}: {exc}"))
            continue
        if not callable(target):
            stale.append((identifier, handler, "not callable"))
    return stale


def forget_synced() -> None:
    """Forget which types this process created or checked (for tests with a fresh database)."""
    _synced.clear()


def forget(name: str) -> None:
    """Drop a task from the registry (tests that declare tasks on the fly use it)."""
    with _lock:
        _registry.pop(name, None)
        _clashes.pop(name, None)
        _synced.discard(name)
