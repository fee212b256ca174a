"""Runs one experiment in one run directory, with all failure handling in one place.

`run_experiment` is what Hydra's task function calls: it validates the config, writes
the resolved config, dispatches to the experiment's trainer, and always leaves a
summary.json (completed, interrupted or failed with its error).
"""
from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from experiments.config import Experiment, validate
from experiments.errors import UserError
from experiments.locks import locked_run_dir
from experiments.runs import CONFIG, Run, StopRequest, write_text_atomic

log = logging.getLogger("nnrun")


@locked_run_dir("run_dir")  # one writer per run directory: a second process fails at once
def run_experiment(cfg: DictConfig, run_dir: Path, name: str) -> dict:
    """Train `cfg` in `run_dir`; return the summary (also written to summary.json).

    Raises UserError (after writing a failed summary) for problems the user can fix;
    other exceptions are recorded the same way and re-raised.
    """
    exp = validate(cfg)  # fails before any file is written
    run = Run(run_dir)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    previous = run.previous_summary() if exp.resume else None
    base = {
        "experiment": name,
        "run_dir": str(run.dir),
        "seed": exp.seed,
        "started_at": (previous or {}).get("started_at", started),
        "resumed": bool(exp.resume),
    }
    prior_wall = float((previous or {}).get("wall_time_s", 0.0)) if previous else 0.0
    saved = OmegaConf.to_yaml(OmegaConf.masked_copy(exp.raw, [k for k in exp.raw if k != "resume"]))
    write_text_atomic(run.dir / CONFIG, saved)
    run.write_summary({**base, "status": "running"})
    t0 = time.perf_counter()
    from experiments.training import train_experiment

    log.info("run %s: %s in %s", name, exp.model.name, run.dir)
    summary: dict[str, Any] = dict(base)
    try:
        with StopRequest() as stop:
            result = train_experiment(exp, run, stop)
        summary.update(result)
    except BaseException as err:  # noqa: BLE001 - recorded, then re-raised
        summary.update(status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                       error=one_line(err))
        if not isinstance(err, (UserError, KeyboardInterrupt)):
            summary["traceback"] = traceback.format_exc()
        log.error("run failed: %s", summary["error"])
        raise
    finally:
        summary["wall_time_s"] = round(prior_wall + time.perf_counter() - t0, 3)
        summary["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        run.write_summary(summary)
        if getattr(exp.trainer, "plots", True):
            plot_quietly(run.dir)
    if summary.get("test"):
        log.info("run %s: test %s", summary["status"], summary["test"])
    else:
        log.info("run %s%s", summary["status"], f" by {summary['interrupted_by']}" if summary.get("interrupted_by") else "")
    return summary


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text and not isinstance(err, UserError) else (text[0] if text else type(err).__name__)


def plot_quietly(run_dir: Path) -> None:
    """Plots are a convenience: a plotting problem must never turn a run into a failure."""
    try:
        from experiments.plots import plot_learning_curves

        plot_learning_curves(run_dir)
    except Exception as err:  # noqa: BLE001
        log.warning("could not draw plots: %s", err)


def load_run_config(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not an nnrun run directory (no {CONFIG}); pass a directory under outputs/")
    return OmegaConf.load(path)


def load_experiment(run_dir: Path) -> Experiment:
    return validate(load_run_config(run_dir))
