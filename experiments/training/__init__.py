"""Trainers: a registry of the ways a model family is trained.

A *trainer* is chosen by `trainer=<name>` and names one of two things:
- a set of pure steps (`Steps`: state initialisation, a train step, an eval step) that the
  one loop driver (driver.py) runs: chunking, epochs, stops, checkpoints, best, resume,
  metrics, summary, test evaluation and vectorised sweeps are the driver's, not the
  trainer's. The gradient trainer (gradient.py) is one; an adversarial trainer (two
  parameter sets, two optim groups) or contrastive divergence (an update without a loss
  gradient) is another `Steps`.
- or, for procedures that are not a sequence of steps (Hebbian storage, hebbian.py), a
  whole `train` function that reports through the same metrics and summary files.

The CLI only looks a trainer up by name.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import jax
from flax import struct

from experiments.registry import Registry


@dataclass
class TrainerConfig:
    """What every step-based trainer's config has (the driver reads these)."""

    name: str = "gradient"
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    log_every: int = 100  # steps per chunk: metrics reach the host once per chunk
    scan: Optional[bool] = None  # full chunks as lax.scan programs; null: yes, except convolutions on CPU (driver.scan_pays)
    max_steps: Optional[int] = None  # stop after this many steps in total (smoke runs)
    devices: Optional[int] = 1  # split each batch over this many devices; null: every CPU core (training/parallel.py)
    checkpoint_every: int = 1  # epochs between periodic checkpoints
    keep: int = 3  # periodic checkpoints kept
    best_metric: Optional[str] = None  # validation metric that picks the best checkpoint; null = the objective's first
    writers: list[str] = field(default_factory=list)  # metric writers besides metrics.jsonl, e.g. [tensorboard]
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        from experiments.errors import UserError

        # checked at config validation, before a run directory exists
        for key in ("epochs", "batch_size", "eval_batch_size", "log_every", "checkpoint_every", "keep"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'trainer.{key}': {getattr(self, key)}; it must be >= 1")
        if self.devices is not None:
            self._check_devices()
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"bad value for 'trainer.max_steps': {self.max_steps}; it must be >= 1 or null")

    def _check_devices(self) -> None:
        """A device count that the machine has and the batch divides (the count needs JAX's devices)."""
        from experiments.errors import UserError

        if self.devices < 1:
            raise UserError(f"bad value for 'trainer.devices': {self.devices}; it must be >= 1 or null")
        if self.devices == 1:
            return
        if self.batch_size % self.devices:
            raise UserError(f"trainer.batch_size={self.batch_size} does not split over trainer.devices={self.devices}; "
                            f"use a batch size divisible by {self.devices}, or trainer.devices=null")
        have = jax.local_devices()
        if self.devices > len(have):
            raise UserError(f"trainer.devices={self.devices} but this machine has {len(have)} {jax.default_backend()} "
                            f"device(s); set trainer.devices to at most {len(have)}, or null")


class Streams(struct.PyTreeNode):
    """Named random streams of one step ("dropout", "augment", "noise", "latent", ...):
    each name folds a fixed hash into the step's key, so adding a stream never shifts another."""

    key: jax.Array

    def __getitem__(self, name: str) -> jax.Array:
        return jax.random.fold_in(self.key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


class Steps(Protocol):
    """What a step-based trainer supplies to the driver. All three are pure and jittable."""

    objective: Any  # experiments.objectives.Objective: turns sums into declared metrics

    def init(self, key: jax.Array, batch: dict) -> Any:
        """The trainer's state, shaped by a real batch (dtypes and shapes from the data)."""

    def train_step(self, state: Any, batch: dict, rngs: Streams) -> tuple[Any, dict]:
        """One update; returns the new state and the batch's metric sums (with "loss")."""

    def eval_step(self, state: Any, batch: dict) -> dict:
        """The batch's metric sums, without updating anything."""

    def learning_rate(self, step: int) -> Optional[float]:
        """The rate used at `step` (0-based), for the metrics records; None if there is none."""


@dataclass(frozen=True)
class TrainerEntry:
    schema: type  # the trainer config dataclass
    description: str
    # step-based trainers: (experiment, dataset, traced per-trial values or None) -> Steps
    steps: Optional[Callable[..., Steps]] = None
    # per-trial values traced in a vectorised sweep: (experiments, steps per trial, total steps) -> stacked dict
    hyperparameters: Optional[Callable[..., dict]] = None
    vmappable: Callable[[Any], set] = lambda exp: set()  # dotted config keys that may differ in a vectorised group
    structural: Callable[[Any], set] = lambda exp: set()  # among those, keys whose zero-ness must agree
    optim_groups: tuple[str, ...] = ()  # config groups typed as optimizers (and `schedule` with them)
    # trainers with their own procedure: (experiment, run, stop request) -> summary fields
    train: Optional[Callable[..., dict]] = None
    evaluate: Optional[Callable[..., dict]] = None  # (experiment, run_dir, split, which) -> metrics
    # for trainers without an objective: the test metric that ranks their runs, and its direction
    primary_metric: Optional[tuple[str, str]] = None

    @property
    def uses_optimizer(self) -> bool:
        return bool(self.optim_groups)


TRAINERS: Registry[TrainerEntry] = Registry("trainer", __name__, aliases={"supervised": "gradient", "hopfield": "hebbian"})


def register_trainer(name: str, entry: TrainerEntry) -> TrainerEntry:
    return TRAINERS.register(name)(entry)


def train_experiment(exp: Any, run: Any, stop: Any) -> dict:
    """Train with the experiment's trainer: its own procedure, or the driver over its steps."""
    entry = TRAINERS.get(exp.trainer.name)
    if entry.train is not None:
        return entry.train(exp, run, stop)
    from experiments.training.driver import train

    return train(exp, run, stop)


def evaluate_experiment(exp: Any, run_dir: Any, split: str, which: str) -> dict:
    entry = TRAINERS.get(exp.trainer.name)
    if entry.evaluate is not None:
        return entry.evaluate(exp, run_dir, split, which)
    from experiments.training.driver import evaluate_run

    return evaluate_run(exp, run_dir, split, which)


def best_metric(exp: Any, objective: Any) -> Any:
    """The metric that picks the best checkpoint: `trainer.best_metric`, else the objective's first."""
    name = getattr(exp.trainer, "best_metric", None)
    return objective.metric(name) if name else objective.primary


@dataclass(frozen=True)
class RankingMetrics:
    """Where a run's ranking numbers live in its summary.json, for sweeps and tables."""

    best: str  # e.g. best.rmse (validation), or test.* for trainers without validation
    direction: str  # max | min
    test: str  # e.g. test.rmse


def ranking_metrics(exp: Any) -> RankingMetrics:
    """The experiment's declared metrics: the objective's (or the trainer's own)."""
    entry = TRAINERS.get(exp.trainer.name)
    if exp.objective is None:
        name, direction = entry.primary_metric or ("loss", "min")
        return RankingMetrics(f"test.{name}", direction, f"test.{name}")
    from experiments.objectives import build_objective

    objective = build_objective(exp.objective)
    best = best_metric(exp, objective)
    return RankingMetrics(f"best.{best.name}", best.direction, f"test.{objective.primary.name}")


def direction_of(exp: Any, path: str) -> Optional[str]:
    """The declared direction of a summary path like best.rmse (None if not a declared metric)."""
    if exp.objective is None:
        ranking = ranking_metrics(exp)
        return ranking.direction if path == ranking.best else None
    from experiments.objectives import build_objective

    name = path.split(".", 1)[-1]
    return next((m.direction for m in build_objective(exp.objective).metrics if m.name == name), None)
