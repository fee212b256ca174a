"""Objectives: what a gradient-trained model is trained for, chosen in config
(`objective=classification|regression|sequence|language_model|reconstruction`) and
independent of the model.

An objective turns a model's outputs and a batch into *sums* (a loss sum, a weight sum
and whatever its metrics need), and turns accumulated sums into its declared metrics.
Sums, not means, so that chunks, epochs, padded evaluation batches and masked time
steps all combine by addition. Every metric declares its direction, so that the best
checkpoint, the default sweep metric and the plots follow the experiment.

Adding an objective = one module here that calls `register_objective`, plus one YAML
in conf/objective/.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp

from experiments.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "max" (higher is better) or "min"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "max" else a < b


@dataclass
class ObjectiveConfig:
    """Fields every objective config has; objectives extend this dataclass."""

    name: str = "classification"


class Objective:
    """Base class. Subclasses set `metrics` (the first is the primary one) and implement
    `sums` and `finalize`; `loss` (the mean that gradients follow) comes from the sums."""

    metrics: tuple[Metric, ...] = ()

    def sums(self, outputs: Any, batch: dict) -> dict[str, jnp.ndarray]:
        """Per-batch sums; must hold "loss" (sum of weighted losses) and "weight"."""
        raise NotImplementedError

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        """Declared metrics (and "loss") from accumulated sums."""
        raise NotImplementedError

    def loss(self, sums: dict[str, jnp.ndarray]) -> jnp.ndarray:
        return sums["loss"] / jnp.maximum(sums["weight"], 1e-12)

    def check(self, outputs_shape: tuple, batch_shapes: dict[str, tuple]) -> None:
        """Raise a UserError if the model's outputs cannot be scored against the batch."""

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    def metric(self, name: str) -> Metric:
        from experiments.errors import UserError

        for m in self.metrics:
            if m.name == name:
                return m
        raise UserError(f"metric '{name}' is not declared by this objective; "
                        f"choose one of: {', '.join(m.name for m in self.metrics)}")


@dataclass(frozen=True)
class ObjectiveEntry:
    schema: type
    build: Callable[[Any], Objective]
    description: str


OBJECTIVES: Registry[ObjectiveEntry] = Registry("objective", __name__)


def register_objective(name: str, schema: type = ObjectiveConfig, description: str = ""):
    """Decorator for a builder `(cfg) -> Objective`."""

    def decorator(build: Callable[[Any], Objective]):
        OBJECTIVES.register(name)(ObjectiveEntry(schema, build, description or (build.__doc__ or "").strip()))
        return build

    return decorator


def build_objective(cfg: Any) -> Objective:
    return OBJECTIVES.get(cfg.name).build(cfg)


def weights(batch: dict, shape: tuple) -> jnp.ndarray:
    """Per-position weights of `shape` (batch first): the batch's "mask" (variable-length
    sequences) times "_valid" (0 for the padding the evaluator adds), broadcast."""
    w = jnp.ones(shape, jnp.float32)
    for key in ("mask", "_valid"):
        if key in batch:
            m = batch[key].astype(jnp.float32)
            w = w * m.reshape(m.shape + (1,) * (len(shape) - m.ndim))
    return w
