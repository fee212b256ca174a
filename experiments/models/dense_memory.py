"""Dense associative memory (the "modern" Hopfield network): softmax retrieval.

For: storing P bipolar patterns X (P, N) as they are and recalling by
    s <- sign(X^T softmax(beta X s)),
the update of Ramsauer et al. 2020 made binary (Krotov & Hopfield 2016 and Demircigil et
al. 2017 with the exponential interaction: energy -logsumexp(beta X s) / beta). The
separation between the overlap of the right pattern (about N(1 - 2f) from a fraction f of
flipped bits) and the largest wrong one (about sqrt(2 N ln P)) grows with N, so capacity is
exponential in N rather than 0.138N: P = N patterns are recalled exactly.
States are {0,1} at the interface, as in hopfield.py; `sign(0)` counts as on.

Not for: weights or learning rules (the memory is the pattern matrix).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.hopfield import DEFAULT_NOISE_LEVELS, evaluate_with, fixed_point_rate, flip_report

Array = jax.Array


class DenseParams(NamedTuple):
    X: Array  # (P, N) bipolar stored patterns


def store_dense(patterns: Array) -> DenseParams:
    return DenseParams(2.0 * jnp.asarray(patterns, jnp.float32) - 1.0)


def dense_step(params: DenseParams, n: Array, beta: float) -> Array:
    """One synchronous softmax update of {0,1} state(s) (N,) or (B, N)."""
    s = 2.0 * n - 1.0
    attn = jax.nn.softmax(beta * (s @ params.X.T), axis=-1)
    return (attn @ params.X >= 0).astype(n.dtype)


def dense_energy(params: DenseParams, n: Array, beta: float) -> Array:
    s = 2.0 * jnp.asarray(n, jnp.float32) - 1.0
    return -jax.nn.logsumexp(beta * (s @ params.X.T), axis=-1) / beta


@partial(jax.jit, static_argnames=("max_steps",))
def dense_recall(params: DenseParams, n0: Array, beta: float, max_steps: int = 20) -> tuple[Array, Array, Array]:
    """Synchronous updates until no state changes (or `max_steps`); returns (final, steps, converged)."""
    n0 = jnp.asarray(n0, jnp.float32)

    def cond(c):
        _, steps, done = c
        return jnp.logical_and(~jnp.all(done), steps < max_steps)

    def body(c):
        n, steps, _ = c
        new = dense_step(params, n, beta)
        return new, steps + 1, jnp.all(new == n, axis=-1)

    done0 = jnp.zeros(n0.shape[:-1], bool)
    n, steps, done = lax.while_loop(cond, body, (n0, jnp.int32(0), done0))
    return n, jnp.broadcast_to(steps, done.shape), done


def fixed_points(params: DenseParams, patterns: Array, beta: float) -> float:
    pats = jnp.asarray(patterns, jnp.float32)
    return float(jnp.mean(jnp.all(dense_step(params, pats, beta) == pats, axis=-1)))


@dataclass
class DenseMemoryConfig(ModelConfig):
    """Config of the `dense_memory` model."""

    name: str = "dense_memory"
    beta: float = 1.0  # inverse temperature on bipolar overlaps (which range over [-N, N])
    max_sweeps: int = 20  # synchronous steps at most
    noise_levels: list[float] = field(default_factory=lambda: list(DEFAULT_NOISE_LEVELS))
    flip_fractions: list[float] = field(default_factory=lambda: [0.1])


@dataclass(frozen=True)
class DenseMemoryModel:
    cfg: DenseMemoryConfig
    num_units: int
    num_patterns: int

    def store(self, patterns: Array) -> DenseParams:
        return store_dense(patterns)

    def params_template(self) -> DenseParams:
        return DenseParams(np.zeros((self.num_patterns, self.num_units), np.float32))

    def recall(self, params: DenseParams, n0: Array, key: Array) -> tuple[Array, Array, Array]:
        return dense_recall(params, n0, float(self.cfg.beta), int(self.cfg.max_sweeps))

    def evaluate(self, params: DenseParams, patterns: Array, image_shape: Sequence[int], key: Array,
                 trials: int = 4) -> dict[str, Any]:
        return evaluate_with(lambda probes, k: self.recall(params, probes, k), patterns, image_shape, key,
                             tuple(self.cfg.noise_levels), trials)

    def capacity(self, params: DenseParams, patterns: Array, key: Array, trials: int = 4) -> dict[str, float]:
        out = {"fixed_points": fixed_points(params, patterns, float(self.cfg.beta))}
        out.update(flip_report(lambda probes, k: self.recall(params, probes, k), patterns, key,
                               tuple(self.cfg.flip_fractions), trials))
        return out


@register_model("dense_memory", schema=DenseMemoryConfig, trainer="hebbian")
def build_dense_memory(cfg: DenseMemoryConfig, info: DataInfo) -> DenseMemoryModel:
    """Dense associative memory (modern Hopfield): softmax retrieval with inverse temperature beta."""
    if not float(cfg.beta) > 0:
        raise UserError(f"model.beta={cfg.beta} must be > 0 (an inverse temperature)")
    if int(cfg.max_sweeps) < 1:
        raise UserError(f"model.max_sweeps={cfg.max_sweeps} must be at least 1")
    for key in ("noise_levels", "flip_fractions"):
        bad = [x for x in getattr(cfg, key) if not 0.0 <= float(x) <= 1.0]
        if bad:
            raise UserError(f"model.{key} must lie in [0, 1]; got {bad}")
    if not info.num_classes:
        raise UserError("dense_memory stores a pattern dataset (data=random_patterns, letters, pattern_file)")
    return DenseMemoryModel(cfg, int(np.prod(info.input_shape)), int(info.num_classes))
