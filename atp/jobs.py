"""Subprocess jobs: a task type whose handler runs an external program in its own directory.

A job type is a TaskType with handler ``atp.jobs.run_job`` and options::

    {"program": "/usr/bin/gdalinfo", "args": ["-json", "{path}"], "env": {"LANG": "C"},
     "output": "result.json", "output_mime_type": "application/json", "grace": 5}

Each ``{name}`` in an argument is replaced by ``input[name]`` (``str.format`` rules: write
literal braces as ``{{`` and ``}}``). The argument list goes to
``execve`` as is, never through a shell, so input like ``; rm -rf /`` or ``$(...)`` stays
one literal argument. Each job runs in ``ATP['JOB_ROOT']/<type>/<identifier>/`` (a relative
JOB_ROOT is resolved against the current directory) in its own process group, and leaves
there ``_stdout.txt``, ``_stderr.txt``, ``_job.json`` (what ran, with what, exit code, times)
and a ``.running`` marker renamed ``.done`` at the end, whatever happens.

Identifiers come from whoever enqueues (over HTTP too), so both path parts are encoded
(``path_part``), never used as they are: ``..``, ``/tmp/x``, backslashes or NUL become
one harmless directory name inside ``JOB_ROOT/<type>/``. A directory that resolves
elsewhere anyway (a symlink planted in ``JOB_ROOT``) is refused: the job fails with
``UnsafeJobDirectory`` and nothing is written there. A program that cannot be started
(missing, not executable) fails the job with exit code 127 (126: no permission), as a
shell reports it.

Stopping: past the type's soft time limit the group gets SIGTERM, then SIGKILL after
``grace`` seconds. A handler terminated by SIGTERM (revoke with terminate) kills the group
first; a handler killed by SIGKILL (hard limit) takes the program with it through
PR_SET_PDEATHSIG (Linux), set in the program's process before it starts.
"""

import ctypes
import errno
import hashlib
import json
import mimetypes
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

from atp import tracker
from atp.conf import settings
from atp.exceptions import ATPError, InvalidInput, SoftTimeLimitExceeded

HANDLER = "atp.jobs.run_job"
#: Bytes of the end of ``_stderr.txt`` quoted in a failed job's message.
STDERR_TAIL = 2000
_PR_SET_PDEATHSIG = 1
#: Longest directory name an encoded identifier takes (file systems allow 255 bytes).
NAME_MAX = 120
#: Exit codes of a program that could not be started, as a POSIX shell reports them.
NOT_FOUND, NOT_EXECUTABLE = 127, 126


class JobFailed(ATPError):
    """The job's program exited with a non-zero code, or was stopped at its time limit."""


class UnsafeJobDirectory(JobFailed):
    """The job's directory would resolve outside ``JOB_ROOT/<type>/`` (a planted symlink)."""


def register_job_type(
    identifier,
    program,
    args=(),
    env=None,
    output=None,
    output_mime_type=None,
    grace=5.0,
    **type_options,
):
    """Register (upsert) a job type running ``program`` with the argument template ``args``.

    ``env`` adds variables to the daemon's environment; ``output`` names a file the program
    writes in its directory that becomes the response (else stdout does), with
    ``output_mime_type`` (guessed from the name when None). ``grace``: seconds between
    SIGTERM and SIGKILL at the soft time limit. Other options go to ``register_task_type``.
    """
    if not isinstance(program, str) or not program:
        raise InvalidInput(f"a job's program must be a non-empty string, not {program!r}")
    if isinstance(args, str) or not all(isinstance(arg, str) for arg in args):
        raise InvalidInput("a job's args must be a list of strings (it never goes to a shell)")
    options = {
        "program": program,
        "args": list(args),
        "env": dict(env or {}),
        "output": output,
        "output_mime_type": output_mime_type,
        "grace": float(grace),
    }
    return tracker.register_task_type(identifier, HANDLER, options=options, **type_options)


def path_part(name: str) -> str:
    """``name`` as one safe directory name: always the same one, and never another's.

    Letters, digits and ``_.-~`` stay; every other character (``/``, ``\\``, NUL, spaces,
    ``%``, non-ASCII) is percent-encoded as UTF-8, and a leading dot is written ``%2E``, so
    no name is empty, ``.``, ``..`` or hidden. A name longer than ``NAME_MAX`` once encoded
    is cut and ends with ``+`` and the SHA-256 of the whole name (``+`` never stays in
    place otherwise), so long names stay distinct.
    """
    encoded = quote(name, safe="", errors="surrogatepass")
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if len(encoded) > NAME_MAX:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        head = encoded[: NAME_MAX - len(digest) - 1]
        head = head[: head.rfind("%")] if "%" in head[-2:] else head  # no cut escape
        encoded = f"{head}+{digest}"
    return encoded


def job_dir(type_identifier, identifier) -> Path:
    """The working directory of job ``identifier`` of type ``type_identifier``.

    Always ``JOB_ROOT/<type>/<identifier>`` with both parts encoded by ``path_part``, so
    it is inside ``JOB_ROOT/<type>/`` whatever the identifier holds.
    """
    root = Path(settings.JOB_ROOT).resolve()
    return root / path_part(type_identifier) / path_part(identifier)


def _make_job_dir(type_identifier, identifier) -> Path:
    """Create the job's directory, one level at a time, refusing any that is a symlink.

    Each level is checked before the next is made in it, so a symlink planted in
    JOB_ROOT (to ``/etc``, say) never gets a directory or a file written through it.
    """
    workdir = job_dir(type_identifier, identifier)
    workdir.parent.parent.mkdir(parents=True, exist_ok=True)
    for level in (workdir.parent, workdir):
        try:
            level.mkdir(exist_ok=True)
        except FileExistsError:  # a dangling symlink, or a file
            pass
        if level.is_symlink() or not level.is_dir() or os.path.realpath(level) != str(level):
            raise UnsafeJobDirectory(
                f"job directory {level} is a symlink or not a directory; refusing to run the "
                "job there (remove it from JOB_ROOT)"
            )
    return workdir


def _argv(options, task_input) -> list[str]:
    values = task_input if isinstance(task_input, dict) else {}
    try:
        args = [arg.format_map(values) for arg in options.get("args", [])]
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidInput(f"the job's input does not fill its argument template: {exc}") from exc
    return [options["program"], *args]


def _die_with_parent():
    """In the program's process before exec: get SIGKILL when the handler's thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _stop_group(proc, grace) -> int:
    """SIGTERM the job's process group, SIGKILL it after ``grace`` seconds; return the code."""
    _signal_group(proc, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        return proc.wait()


def _signal_group(proc, signum) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))


def run_job(task_status, input):
    """The handler of job types: run the program, record its files, store its response."""
    info = task_status.get_info()
    task_type = tracker.get_task_type(info.type)
    options = task_type.options or {}
    workdir = _make_job_dir(info.type, info.identifier)
    argv = _argv(options, input)
    env = {**os.environ, **{str(k): str(v) for k, v in options.get("env", {}).items()}}
    record = {
        "type": info.type,
        "identifier": info.identifier,
        "attempt": task_status.attempt,
        "argv": argv,
        "env": options.get("env", {}),
        "input": input,
        "cwd": str(workdir),
        "started_at": time.time(),
        "exit_code": None,
    }
    (workdir / ".done").unlink(missing_ok=True)
    (workdir / ".running").write_text(str(record["started_at"]))
    _write_json(workdir / "_job.json", record)
    stdout_path, stderr_path = workdir / "_stdout.txt", workdir / "_stderr.txt"
    code, timed_out = None, False
    try:
        try:
            with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
                proc = subprocess.Popen(  # noqa: S603 - a list, never a shell
                    argv,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group, killable as a whole
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl
                )
        except OSError as exc:  # missing program, no permission, not an executable
            code = NOT_EXECUTABLE if exc.errno in (errno.EACCES, errno.ENOEXEC) else NOT_FOUND
            with open(stderr_path, "a") as err:
                err.write(f"[atp] the program could not be started: {exc}\n")
        else:
            record["pid"] = proc.pid
            _write_json(workdir / "_job.json", record)
            code, timed_out = _wait(proc, task_status, task_type, options, stderr_path, workdir)
    finally:
        # Whatever happened, the directory says the job is over, and how.
        record.update(exit_code=code, ended_at=time.time(), timed_out=timed_out)
        _write_json(workdir / "_job.json", record)
        if (workdir / ".running").exists():
            (workdir / ".running").rename(workdir / ".done")
    if timed_out or code != 0:
        tail = stderr_path.read_bytes()[-STDERR_TAIL:].decode("utf-8", errors="replace")
        why = "stopped at its soft time limit" if timed_out else "failed"
        raise JobFailed(f"job {why} with exit code {code}; stderr ends with:\n{tail}")
    if options.get("output"):
        output = workdir / options["output"]
        mime_type = options.get("output_mime_type") or (
            mimetypes.guess_type(output.name)[0] or "application/octet-stream"
        )
        task_status.store_response(output.read_bytes(), mime_type)
    else:
        task_status.store_response(stdout_path.read_bytes(), "text/plain")
    return {"exit_code": code, "dir": str(workdir)}


def _wait(proc, task_status, task_type, options, stderr_path, workdir) -> tuple[int, bool]:
    """Wait for the program, heartbeating; stop its group at the soft limit.

    Returns ``(exit code, timed out)``. The heartbeats keep a long job from being taken
    for silent (its type's ``timeout`` counts from the task's last update); a heartbeat
    that learns the task was taken away stops the program before the error goes up.
    """
    previous = _kill_group_on_sigterm(proc, workdir)
    beat_every = max(0.2, min(settings.HEARTBEAT_INTERVAL, task_type.timeout / 3))
    deadline = (
        time.monotonic() + task_status.soft_time_limit if task_status.soft_time_limit else None
    )
    try:
        while True:
            wait = beat_every if deadline is None else min(beat_every, deadline - time.monotonic())
            try:
                return proc.wait(timeout=max(0.0, wait)), False
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
            try:
                task_status.heartbeat()
            except Exception:
                _stop_group(proc, options.get("grace", 5.0))
                raise
    except (subprocess.TimeoutExpired, SoftTimeLimitExceeded):
        code = _stop_group(proc, options.get("grace", 5.0))
        with open(stderr_path, "a") as err:
            err.write(f"\n[atp] soft time limit reached: process group stopped (exit {code})\n")
        return code, True
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _kill_group_on_sigterm(proc, workdir):
    """While the job runs, SIGTERM to the handler kills the job's group, then the handler.

    Only the main thread may set signal handlers; in a thread pool the handler is never
    signalled anyway (threads cannot be killed). Returns the previous handler, or None.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigterm(signum, frame):
        _signal_group(proc, signal.SIGKILL)
        # Reap it here, not with proc.wait(): the interrupted proc.wait() below us holds
        # Popen's (non-reentrant) wait lock, so calling it again would deadlock.
        try:
            os.waitpid(proc.pid, 0)
        except ChildProcessError:
            pass
        if (workdir / ".running").exists():
            (workdir / ".running").rename(workdir / ".done")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # die of SIGTERM: the daemon records a revoke

    return signal.signal(signal.SIGTERM, on_sigterm)
