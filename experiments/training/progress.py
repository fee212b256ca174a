"""The rich progress bar shown while a loop trains (epoch, step, loss, accuracy, images/s, ETA)."""
from __future__ import annotations

from typing import Optional

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool = True):
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.enabled = enabled
        self._progress: Optional[Progress] = None
        self._task = None

    def __enter__(self) -> "TrainProgress":
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]} acc {task.fields[acc]} {task.fields[ips]} img/s {task.fields[val]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                "train", total=self.epochs * self.steps_per_epoch, epoch=0, epochs=self.epochs,
                loss="-", acc="-", ips="-", val="",
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, epoch: int, step_in_epoch: int, loss: float, acc: float, ips: Optional[float]) -> None:
        if self._progress is None:
            return
        self._progress.update(
            self._task,
            completed=epoch * self.steps_per_epoch + step_in_epoch,
            epoch=epoch + 1,
            loss=f"{loss:.4f}",
            acc=f"{acc:.4f}",
            ips=f"{ips:,.0f}" if ips else "-",
        )

    def end_epoch(self, epoch: int, val: Optional[dict]) -> None:
        if self._progress is not None and val:
            self._progress.update(self._task, val=f"| val acc {val['accuracy']:.4f}")
