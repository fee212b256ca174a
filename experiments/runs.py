"""A run directory: resolved config, metrics.jsonl, summary.json, checkpoints/, plots/, log.

Files that describe a finished state (summary.json, config.yaml, eval.json) are written
atomically (temp file + rename), so a crash never leaves a half-written file behind.
metrics.jsonl grows by one whole line per record: a write that fails (a full disk) is
cut back to the previous end of the file, and a torn last line (a kill in mid-write) is
dropped when the file is read or appended to again. A full disk (ENOSPC, or a quota)
surfaces as `DiskFullError`: a one-line UserError that names the device's directory,
the last good checkpoint of the run and how to continue.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Optional

from experiments.errors import UserError

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"

log = logging.getLogger("nnrun")

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how the C++ writers (tensorstore, under orbax) spell ENOSPC / EDQUOT in their messages
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", f"os_error_code='{errno.ENOSPC}'",
                   f"os_error_code='{errno.EDQUOT}'")


class DiskFullError(UserError, OSError):
    """A write failed for lack of space (ENOSPC or a disk quota); the message says what
    was being written, which checkpoint is the last good one and how to go on. Also an
    OSError (errno ENOSPC), so code that handles failed writes still does."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC

    def __str__(self) -> str:
        return str(self.args[0])


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) is a failed write for lack of space."""
    seen: set[int] = set()
    e: Optional[BaseException] = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return True
        if any(t in str(e) for t in _DISK_FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


def last_good_checkpoint(run_dir: Path, which: str = "last") -> Optional[Path]:
    """The newest finished checkpoint directory <run>/checkpoints/<which>/<step> (orbax
    writes into <step>.orbax-checkpoint-tmp* and renames when done), or None."""
    root = Path(run_dir) / "checkpoints" / which
    try:
        steps = [int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir()]
    except OSError:
        return None
    return root / str(max(steps)) if steps else None


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def disk_full_error(writing: Path, run_dir: Optional[Path] = None) -> DiskFullError:
    """The one-line message for a write of `writing` that found no space left. With
    `run_dir`: the run's last good checkpoint and the resume command."""
    where = Path(run_dir) if run_dir is not None else Path(writing).parent
    try:
        usage = shutil.disk_usage(where)
        free = f" ({_size(usage.free)} free now, of {_size(usage.total)})"
    except OSError:
        free = ""
    head = f"no space left on the device holding {where}{free}: could not write {writing}"
    if run_dir is None:
        return DiskFullError(f"{head}. Free space there, then run the command again")
    last = last_good_checkpoint(run_dir)
    if last is None:
        return DiskFullError(f"{head}; the run has no complete checkpoint yet. Free space there, "
                             "then start the run again in a new directory")
    return DiskFullError(f"{head}; the last good checkpoint is {last} (step {last.name}). "
                         f"Free space there, then continue with `nnrun train resume={run_dir}`")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once: readers (and a crash) see the old file or
    the new one, never a part. A full disk leaves the old file as it was and raises
    DiskFullError."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file permissions
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, DiskFullError) and is_disk_full(err):
            raise disk_full_error(path) from err
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import, before any threads
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the files stay valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


class Run:
    """Writes the files of one run directory."""

    def __init__(self, directory: Path):
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def plots_dir(self) -> Path:
        return self.dir / "plots"

    def log_metrics(self, record: dict) -> None:
        """Append one record as one line. A failed write (a full disk) leaves the file as
        it was before the call, never a half line, and raises DiskFullError."""
        data = (json.dumps(_finite(record)) + "\n").encode()
        path = self.dir / METRICS
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            raise (disk_full_error(path, self.dir) if is_disk_full(err) else err) from err
        try:
            end = _drop_torn_tail(fd)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    if n <= 0:  # pragma: no cover - POSIX reports an error instead
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    view = view[n:]
            except BaseException as err:
                os.ftruncate(fd, end)  # a short write left part of the line: cut it off
                if isinstance(err, OSError) and is_disk_full(err):
                    raise disk_full_error(path, self.dir) from err
                raise
        finally:
            os.close(fd)

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)

    def truncate_metrics(self, after_step: int) -> list[dict]:
        """On resume, drop records newer than the restored checkpoint, and records of a
        chunk or epoch cut short by a stop or a cap (`partial`): the continued run logs
        them whole. Returns the records kept."""
        kept = [r for r in self.metrics() if r.get("step", 0) <= after_step and not r.get("partial")]
        self._write_atomic(self.dir / METRICS, "".join(json.dumps(_finite(r)) + "\n" for r in kept))
        return kept

    def write_summary(self, summary: dict) -> None:
        """summary.json, replaced atomically. On a full disk the previous summary stays
        whole; if another error is already on its way out (the write is the runner's
        last word on a failed run) that error is the one the user sees."""
        pending = sys.exc_info()[1]  # set when called from the `finally` of a failing run
        try:
            self._write_atomic(self.dir / SUMMARY, json.dumps(_finite(summary), indent=2, sort_keys=False) + "\n")
        except DiskFullError as err:
            if pending is None:
                raise
            log.error("could not write summary.json: %s", err)

    def _write_atomic(self, path: Path, text: str) -> None:
        try:
            write_text_atomic(path, text)
        except DiskFullError as err:
            raise disk_full_error(path, self.dir) from err.__cause__

    def previous_summary(self) -> Optional[dict]:
        path = self.dir / SUMMARY
        return read_json(path) if path.exists() else None


def _drop_torn_tail(fd: int) -> int:
    """Cut a last line without its newline (a write killed half-way) off the file open at
    `fd`; returns the file's size afterwards."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end, block = size, 4096
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    log.warning("dropped a torn last line from %s (a write interrupted half-way)", METRICS)
    return end


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of metrics.jsonl; a last line cut short by a kill is left out."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            if i == len(lines) - 1:  # no newline after it: a write that never finished
                break
            raise UserError(f"{path} line {i + 1} is not a JSON record ({err}); the file was edited or "
                            "damaged. Remove that line, or train again in a new directory") from err
    return records


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the training loop polls between steps,
    so that it can checkpoint and mark the run interrupted instead of dying mid-write."""

    def __init__(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "stop now"
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
