"""One writer per run or sweep directory: an exclusive lock on <dir>/.nnrun.lock.

A process that trains, resumes, evaluates (eval.json) or sweeps in a directory holds an
exclusive `flock` on the directory's lock file for as long as it writes there; a second
process fails at once with one line naming the directory and the process holding it.
The operating system releases the lock when the holder exits in any way (kill -9
included), so there is never a stale lock to remove by hand; the lock file itself stays
(deleting it would let two processes lock two different files of the same name).

Within one process the lock is re-entrant: `nnrun train` takes it before Hydra writes
.hydra/ and the run (experiments/runner.py) takes it again, for the launchers that call
the run directly.

Not for: locking files other than through this module, or machines without flock (on a
filesystem that does not support it the run goes on unlocked, with a warning in the log).
"""
from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from experiments.errors import UserError

LOCK_NAME = ".nnrun.lock"
log = logging.getLogger("nnrun")

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no locking
    fcntl = None  # type: ignore[assignment]

_held: dict[Path, list] = {}  # lock file -> [fd (or None when unlocked), count]
_guard = threading.Lock()


class DirectoryBusy(UserError):
    """Another process holds the directory's lock."""

    def __init__(self, directory: Path, kind: str, holder: str):
        self.directory, self.holder = directory, holder
        what = {"run": "run directory", "sweep": "sweep directory"}.get(kind, "directory")
        fix = ("wait for it to finish, or stop it first (kill -TERM checkpoints a run)" if kind != "sweep"
               else "wait for it to finish, or stop it first (Ctrl-C or kill -TERM checkpoints its trials)")
        super().__init__(f"{what} {directory} is in use by {holder}; {fix}")


class DirLock:
    """An exclusive, re-entrant (per process) lock on a directory; a context manager.

    `kind` ("run", "sweep") only words the error message."""

    def __init__(self, directory: Path, kind: str = "run"):
        self.dir = Path(directory).resolve()
        self.kind = kind
        self.path = self.dir / LOCK_NAME
        self._acquired = False

    def acquire(self) -> "DirLock":
        if self._acquired:
            return self
        with _guard:
            entry = _held.get(self.path)
            if entry is not None:
                entry[1] += 1
            else:
                _held[self.path] = [self._lock(), 1]
        self._acquired = True
        return self

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        with _guard:
            entry = _held.get(self.path)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self.path]
            fd = entry[0]
        if fd is not None:
            try:
                os.ftruncate(fd, 0)  # no holder named any more
            except OSError:
                pass
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _lock(self) -> Optional[int]:
        if fcntl is None:  # pragma: no cover
            return None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            raise UserError(f"cannot lock {self.dir}: {err.strerror or err} ({self.path}); "
                            "check that the directory is writable by you") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DirectoryBusy(self.dir, self.kind, holder) from None
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                log.warning("cannot lock %s (%s): the filesystem has no file locks; "
                            "nothing stops two processes from writing it", self.dir, err.strerror)
                return None
            raise UserError(f"cannot lock {self.dir}: {err.strerror or err}") from err
        try:  # name the holder, for the message the next process prints (best effort)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds anyway
        return fd


def _holder(fd: int, wait_s: float = 0.5) -> str:
    """'process PID' (on HOST when it is another machine), from the lock file's text;
    the holder writes it right after locking, so wait a moment for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = os.pread(fd, 256, 0).decode(errors="replace").split()
        except OSError:
            text = []
        if text or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if not text:
        return "another process"
    pid, host = text[0], (text[1] if len(text) > 1 else "")
    return f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def hold(directory: Path, kind: str = "run") -> DirLock:
    """`with hold(dir):` - the directory's lock for the block (UserError if another process has it)."""
    return DirLock(directory, kind)


def holds(directory: Path) -> bool:
    """Whether this process holds the lock on `directory`."""
    with _guard:
        return (Path(directory).resolve() / LOCK_NAME) in _held


def locked_run_dir(argument: str = "run_dir", kind: str = "run") -> Callable:
    """Decorator: hold the lock on the directory passed as `argument` while the function runs."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            directory = signature.bind(*args, **kwargs).arguments[argument]
            with hold(Path(directory), kind):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def only_lock_files(directory: Path) -> bool:
    """True when `directory` holds nothing but lock files (a run or sweep not started yet)."""
    return all(p.name in (LOCK_NAME, ".lock") for p in Path(directory).iterdir())
