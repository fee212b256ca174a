"""Metric writers: metrics.jsonl is the canonical record (every plot, table, sweep and
resume reads it); other writers mirror it for tools, chosen with `trainer.writers`.

- `tensorboard`: event files under <run>/tensorboard/ (tensorboardX, the optional
  `tensorboard` extra), so `tensorboard --logdir outputs` shows every run and sweep trial.

Adding a writer = a class with write(record) and close(), registered in WRITERS.
"""
from __future__ import annotations

from typing import Any, Callable

from experiments.errors import UserError

SKIP = ("step", "epoch", "split", "time", "partial")  # bookkeeping, not curves


class JsonlWriter:
    def __init__(self, run: Any):
        self.run = run

    def write(self, record: dict) -> None:
        self.run.log_metrics(record)

    def close(self) -> None:
        pass


class TensorBoardWriter:
    """Scalars tagged <split>/<metric> against the step."""

    def __init__(self, run: Any):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise UserError("trainer.writers lists 'tensorboard' but tensorboardX is not installed; "
                            "pip install 'nnrun[tensorboard]' (or drop it from trainer.writers)") from err
        self.writer = SummaryWriter(logdir=str(run.dir / "tensorboard"), flush_secs=30)

    def write(self, record: dict) -> None:
        split, step = record.get("split", "train"), int(record["step"])
        for key, value in record.items():
            if key not in SKIP and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


WRITERS: dict[str, Callable[[Any], Any]] = {"tensorboard": TensorBoardWriter}


def check_writers(names: list[str]) -> None:
    for name in names:
        if name not in WRITERS:
            raise UserError(f"unknown metric writer '{name}' in trainer.writers; known: {', '.join(sorted(WRITERS))} "
                            "(metrics.jsonl is always written)")


class Writers:
    """metrics.jsonl first, then each configured writer."""

    def __init__(self, writers: list):
        self.writers = writers

    def write(self, record: dict) -> None:
        for w in self.writers:
            w.write(record)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def open_writers(run: Any, names: list[str]) -> Writers:
    check_writers(names)
    return Writers([JsonlWriter(run), *(WRITERS[n](run) for n in names)])
