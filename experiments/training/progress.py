"""The rich progress bar shown while a run trains (epoch, step, loss, the objective's
primary metric, examples/s, ETA)."""
from __future__ import annotations

from typing import Optional

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, epochs: int, steps_per_epoch: int, metrics: list[str], enabled: bool = True):
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.shown = ["loss", *(m for m in metrics if m != "loss")][:2]  # loss and the primary metric
        self.enabled = enabled
        self._progress: Optional[Progress] = None
        self._task = None

    def __enter__(self) -> "TrainProgress":
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]} {task.fields[ips]}/s {task.fields[val]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                "train", total=self.epochs * self.steps_per_epoch, epoch=0, epochs=self.epochs,
                metrics="", ips="-", val="",
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, epoch: int, step_in_epoch: int, metrics: dict, ips: Optional[float]) -> None:
        if self._progress is None:
            return
        self._progress.update(
            self._task,
            completed=epoch * self.steps_per_epoch + step_in_epoch,
            epoch=epoch + 1,
            metrics=" ".join(f"{m} {metrics[m]:.4g}" for m in self.shown if m in metrics),
            ips=f"{ips:,.0f}" if ips else "-",
        )

    def end_epoch(self, epoch: int, val: Optional[dict]) -> None:
        if self._progress is not None and val:
            primary = self.shown[-1]
            self._progress.update(self._task, val=f"| val {primary} {val.get(primary, float('nan')):.4g}")
