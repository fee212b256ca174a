"""Progress while a run trains: epoch, step, loss, the objective's primary metric,
examples/s, ETA.

In a terminal, a rich progress bar whose columns fit its width (the bar and the elapsed
time go first when it is narrow; nothing is cut to `...`). When the output is not a
terminal (a pipe, a log file), one plain line per epoch instead: a redrawn bar would
only leave its last, clipped frame there.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from rich.console import Console
from rich.table import Column
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("nnrun")  # run.log (Hydra's job logging): one line per epoch, whatever the terminal
WIDE = 110  # columns from which the bar and the elapsed time are shown too


def fmt_rate(ips: Optional[float]) -> str:
    if not ips:
        return "-"
    return f"{ips / 1000:.3g}k" if ips >= 10_000 else f"{ips:,.0f}"


def fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class TrainProgress:
    def __init__(self, epochs: int, steps_per_epoch: int, metrics: list[str], enabled: bool = True,
                 console: Optional[Console] = None):
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.shown = ["loss", *(m for m in metrics if m != "loss")][:2]  # loss and the primary metric
        self.enabled = enabled
        self.console = console or Console()
        self._progress: Optional[Progress] = None
        self._task = None
        self._plain = enabled and not self.console.is_terminal
        self.wide = True
        self._last: dict = {}
        self._t0 = time.perf_counter()

    def __enter__(self) -> "TrainProgress":
        self._t0 = time.perf_counter()
        log.info("training: %d epochs of %d steps", self.epochs, self.steps_per_epoch)
        if self.enabled and not self._plain:
            wide = self.wide = self.console.width >= WIDE
            fold = Column(overflow="fold")  # a terminal narrower still: fold, never cut
            columns = [TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}")]
            if wide:
                columns.append(BarColumn(bar_width=20))
            columns += [MofNCompleteColumn(),
                        TextColumn("{task.fields[metrics]}{task.fields[val]} {task.fields[ips]}/s", table_column=fold)]
            if wide:
                columns.append(TimeElapsedColumn())
            columns += [TextColumn("eta"), TimeRemainingColumn()]
            self._progress = Progress(*columns, console=self.console, transient=False, expand=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(
                "train", total=self.epochs * self.steps_per_epoch, epoch=0, epochs=self.epochs,
                metrics="", ips="-", val="",
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def _metrics(self, metrics: dict, terse: bool = False) -> str:
        shown = self.shown[-1:] if terse else self.shown  # a narrow terminal: the primary metric only
        return " ".join(f"{m} {metrics[m]:.4g}" for m in shown if m in metrics)

    def update(self, epoch: int, step_in_epoch: int, metrics: dict, ips: Optional[float]) -> None:
        self._last = {"epoch": epoch, "step": epoch * self.steps_per_epoch + step_in_epoch, "metrics": metrics,
                      "ips": ips}
        if self._progress is None:
            return
        self._progress.update(
            self._task,
            completed=epoch * self.steps_per_epoch + step_in_epoch,
            epoch=epoch + 1,
            metrics=self._metrics(metrics, terse=not self.wide),
            ips=fmt_rate(ips),
        )

    def end_epoch(self, epoch: int, val: Optional[dict]) -> None:
        primary = self.shown[-1]
        val_text = f" | val {primary} {val.get(primary, float('nan')):.4g}" if val else ""
        if self._progress is not None and val:
            value = val.get(primary, float("nan"))
            self._progress.update(self._task, val=val_text if self.wide else f" | val {value:.4g}")
        last = self._last
        total = self.epochs * self.steps_per_epoch
        parts = [f"epoch {epoch}/{self.epochs}", f"step {last.get('step', '-')}/{total}",
                 self._metrics(last.get("metrics") or {})]
        head = "  ".join(p for p in parts if p)
        tail = (f"val {primary} {val.get(primary, float('nan')):.4g}  " if val else "") + \
            f"{fmt_rate(last.get('ips'))} examples/s  {fmt_duration(time.perf_counter() - self._t0)}"
        line = f"{head} | {tail}"
        log.info("%s", line)
        if self._plain:  # one line, or two where it would not fit: wrapped by nnrun, not cut by anyone
            text = line if len(line) <= self.console.width else f"{head}\n  {tail}"
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
