"""Trials as child processes on this machine: at most N alive, polled, signals forwarded.

Each trial is `python -m cli.main train ...` in its own process (and own session, so a
Ctrl-C at the terminal reaches only the sweep), logging to <sweep_dir>/logs/<id>.log.
On SIGINT/SIGTERM the pool starts nothing new and forwards SIGTERM to the running
children (they checkpoint and mark themselves interrupted), then waits for them; a
second signal forwards SIGINT (the trainer's "stop now"), a third kills them.

Not for deciding what to run or reading results (driver.py, results.py).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from experiments.sweep.spec import Trial

ESCALATION = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)


@dataclass
class Job:
    trial: Trial
    argv: list[str]
    run_dir: Path
    log: Path


def train_argv(conf: str, trial: Trial, run_dir: Path, extra: list[str]) -> list[str]:
    from experiments.hydra_bridge import quote

    return [sys.executable, "-m", "cli.main", "train", f"conf={conf}", *trial.overrides, *extra,
            f"hydra.run.dir={quote(str(run_dir))}"]


def resume_argv(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cli.main", "train", f"resume={run_dir}"]


def child_env() -> dict[str, str]:
    """The parent's environment; GPU memory shared between children; the same nnrun code
    as the parent (its root first on the path, the working directory not on it)."""
    import experiments

    root = str(Path(experiments.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1",
            "PYTHONSAFEPATH": "1", "PYTHONPATH": root + (os.pathsep + path if path else "")}


class SweepLock:
    """<sweep_dir>/.lock holding this process's id while it runs the sweep, so that a
    second `nnrun sweep --resume` of the same directory refuses instead of colliding."""

    def __init__(self, sweep_dir: Path):
        self.path = Path(sweep_dir) / ".lock"

    def __enter__(self) -> "SweepLock":
        from experiments.errors import UserError

        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid and pid != os.getpid() and _alive(pid):
            raise UserError(f"{self.path.parent} is being run by process {pid}; wait for it or stop it first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Signals:
    """Counts SIGINT/SIGTERM received while the pool runs (main thread only)."""

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _start(job: Job) -> subprocess.Popen:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        log.write(f"$ {shlex.join(job.argv)}\n")
        log.flush()
        return subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env(), start_new_session=True)


def run_pool(next_job: Callable[[], Optional[Job]], on_done: Callable[[Job, int], None], jobs: int,
             poll_s: float = 0.1) -> bool:
    """Run jobs from `next_job()` (None: no more) with at most `jobs` alive; call
    `on_done(job, exit_code)` as each ends. Returns True if interrupted by a signal."""
    running: dict[subprocess.Popen, Job] = {}
    exhausted, forwarded = False, 0
    with _Signals() as signals:
        try:
            while True:
                while not signals.count and not exhausted and len(running) < jobs:
                    job = next_job()
                    if job is None:
                        exhausted = True
                    else:
                        running[_start(job)] = job
                if not running and (exhausted or signals.count):
                    break
                while forwarded < min(signals.count, len(ESCALATION)):
                    for proc in running:
                        _send(proc, ESCALATION[forwarded])
                    forwarded += 1
                for proc in [p for p in running if p.poll() is not None]:
                    on_done(running.pop(proc), proc.returncode)
                time.sleep(poll_s)
        except BaseException:
            _stop_all(running)
            raise
    return signals.count > 0


def _send(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _stop_all(running: dict[subprocess.Popen, Job], grace_s: float = 30.0) -> None:
    """On an error in the sweep itself: ask the children to stop, then make sure they do."""
    for proc in running:
        _send(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
