"""The layout keeps every documented import path and every handler path stored in databases."""

import ast
import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "atp.daemon.Daemon",  # from atp.daemon import Daemon, WorkerOptions, POOLS
        "atp.daemon.WorkerOptions",
        "atp.daemon.POOLS",
        "atp.search.search_q",  # README: the Q of a search in your own QuerySets
        "atp.subtasks.get_progress",  # README: a parent's progress
        "atp.backends.ATPBackend",  # settings: TASKS = {"default": {"BACKEND": ...}}
        "atp.django_tasks_handler.run",  # stored as TaskType.handler
        "atp.jobs.run_job",  # stored as TaskType.handler
        "atp.urls.urlpatterns",  # include("atp.urls")
    ],
)
def test_documented_and_stored_paths_still_import(path):
    module, name = path.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is not None


def test_old_paths_are_the_same_objects_as_the_new_ones():
    from atp import search, subtasks
    from atp.daemon import Daemon, engine
    from atp.query import search as query_search
    from atp.tracker import subtasks as tracker_subtasks

    assert search.search_q is query_search.search_q
    assert subtasks.get_progress is tracker_subtasks.get_progress
    assert Daemon is engine.Daemon


def test_an_unknown_name_of_atp_daemon_is_an_attribute_error():
    import atp.daemon

    with pytest.raises(AttributeError, match="no attribute 'Deamon'"):
        atp.daemon.Deamon  # noqa: B018


# --- layering: the import graph of atp/ ------------------------------------------------------

ATP_ROOT = Path(__file__).resolve().parents[2] / "atp"

#: Layers that must never import the layers above them (the daemon, the admin, the HTTP API).
LOWER = ("atp.tracker", "atp.sql", "atp.query")
UPPER = ("atp.daemon", "atp.admin", "atp.http")
#: Who may import atp.daemon: it is the atpd process, started by its command (and the benchmark).
DAEMON_USERS = (
    "atp.daemon",
    "atp.management.commands.atpd",
    "atp.management.commands.atp_bench",
    "atp.bench.throughput",
    # drain() and eager mode run tasks in the caller's process with the daemon's own runner
    # (issue 17): an in-process atpd.
    "atp.testing",
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ATP_ROOT.rglob("*.py"):
        parts = list(path.relative_to(ATP_ROOT.parent).with_suffix("").parts)
        if "migrations" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    """Every atp module and the atp modules it imports, at the top or inside a function.

    ``from atp.tracker import core`` counts as importing ``atp.tracker.core`` (a module), and
    ``from atp.tracker import enqueue_task`` as importing the package ``atp.tracker``.
    """
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    imported.add(submodule if submodule in modules else node.module)
        graph[name] = {module for module in imported if module in modules and module != name}
    return graph


def _in(module: str, packages) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def test_the_graph_sees_the_modules_and_their_imports():
    graph = _import_graph()
    assert {"atp.tracker.core", "atp.daemon.engine", "atp.sql", "atp.query.search"} <= set(graph)
    assert "atp.tracker.core" in graph["atp.tracker.running"]
    assert "atp.daemon.workers" in graph["atp.daemon.engine"]  # from atp.daemon import workers


def test_atp_has_no_import_cycle():
    graph = _import_graph()
    cycles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def test_lower_layers_never_import_the_daemon_the_admin_or_the_http_api():
    graph = _import_graph()
    wrong = {
        (module, imported)
        for module, imports in graph.items()
        if _in(module, LOWER)
        for imported in imports
        if _in(imported, UPPER)
    }
    assert wrong == set()


def test_only_atpd_and_its_benchmark_import_the_daemon():
    graph = _import_graph()
    wrong = {
        (module, imported)
        for module, imports in graph.items()
        if not _in(module, DAEMON_USERS)
        for imported in imports
        if _in(imported, ("atp.daemon",))
    }
    assert wrong == set()


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of ``graph``."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_tracker_exports_no_private_helper():
    from atp import tracker

    assert [name for name in tracker.__all__ if name.startswith("_")] == []
    assert not any(hasattr(tracker, name) for name in ("_get_task", "_get_type", "_check_owner"))
