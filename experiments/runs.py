"""A run directory: resolved config, metrics.jsonl, summary.json, checkpoints/, plots/, log.

Files that describe a finished state (summary.json, config.yaml, eval.json) are written
atomically (temp file + rename), so a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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

    def __init__(self, directory: Path, experiment: str):
        self.dir = Path(directory).resolve()
        self.experiment = experiment
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def plots_dir(self) -> Path:
        return self.dir / "plots"

    def log_metrics(self, record: dict) -> None:
        with open(self.dir / METRICS, "a") as f:
            f.write(json.dumps(_finite(record)) + "\n")

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop records newer than the restored checkpoint (they will be redone)."""
        kept = [r for r in self.metrics() if r.get("step", 0) <= after_step]
        write_text_atomic(self.dir / METRICS, "".join(json.dumps(_finite(r)) + "\n" for r in kept))

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.dir / SUMMARY, summary)

    def previous_summary(self) -> Optional[dict]:
        path = self.dir / SUMMARY
        return read_json(path) if path.exists() else None


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
