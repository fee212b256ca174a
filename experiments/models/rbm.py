"""Restricted Boltzmann machine: Bernoulli hidden units, Bernoulli (or Gaussian) visible units.

For: the energy E(v, h) = -b.v - c.h - v^T W h (Gaussian visible: + |v - b|^2 / 2 - b.v
dropped), its free energy F(v) = -log sum_h exp(-E(v, h)), block Gibbs sampling, the
contrastive-divergence statistics, and the measures of a trained model: reconstruction
error, pseudo-log-likelihood, exact log Z by enumerating the hidden layer (<= 20 units)
and annealed importance sampling (Salakhutdinov & Murray 2008) for larger ones.
All functions are pure and jittable; `RBMParams` is a pytree (checkpointed by the driver).

Not for: training loops (experiments/training/contrastive_divergence.py) or I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model

Array = jax.Array
VISIBLE = ("bernoulli", "gaussian")
MAX_EXACT_HIDDEN = 20  # 2^20 hidden states: about a second per log Z on a CPU


class RBMParams(NamedTuple):
    W: Array  # (V, H)
    b: Array  # (V,) visible biases
    c: Array  # (H,) hidden biases


@dataclass
class RBMConfig(ModelConfig):
    """Config of the `rbm` model."""

    name: str = "rbm"
    hidden: int = 500
    visible: str = "bernoulli"  # bernoulli | gaussian (unit variance; standardise the data)
    init_scale: float = 0.01  # std of the initial weights
    # visible biases start at log(p/(1-p)) of the training data's mean (Hinton's practical guide)
    data_init_bias: bool = True


@dataclass(frozen=True)
class RBM:
    """The functions of one RBM shape, bound to its visible type."""

    visible_units: int
    hidden_units: int
    visible: str = "bernoulli"
    init_scale: float = 0.01
    data_init_bias: bool = True

    @property
    def gaussian(self) -> bool:
        return self.visible == "gaussian"

    def init(self, key: Array, data_mean: Array | None = None) -> RBMParams:
        w = self.init_scale * jax.random.normal(key, (self.visible_units, self.hidden_units), jnp.float32)
        b = jnp.zeros((self.visible_units,), jnp.float32)
        if data_mean is not None and self.data_init_bias:
            b = base_rate_bias(data_mean) if not self.gaussian else jnp.asarray(data_mean, jnp.float32)
        return RBMParams(w, b, jnp.zeros((self.hidden_units,), jnp.float32))

    # ---- conditionals
    def hidden_probs(self, p: RBMParams, v: Array) -> Array:
        return jax.nn.sigmoid(v @ p.W + p.c)

    def visible_mean(self, p: RBMParams, h: Array) -> Array:
        act = h @ p.W.T + p.b
        return act if self.gaussian else jax.nn.sigmoid(act)

    def sample_visible(self, p: RBMParams, h: Array, key: Array) -> Array:
        mean = self.visible_mean(p, h)
        if self.gaussian:
            return mean + jax.random.normal(key, mean.shape, mean.dtype)
        return jax.random.bernoulli(key, mean).astype(mean.dtype)

    def gibbs(self, p: RBMParams, v: Array, key: Array) -> tuple[Array, Array]:
        """One block Gibbs step v -> h -> v'; returns (v', p(h | v))."""
        kh, kv = jax.random.split(key)
        ph = self.hidden_probs(p, v)
        h = jax.random.bernoulli(kh, ph).astype(v.dtype)
        return self.sample_visible(p, h, kv), ph

    def gibbs_chain(self, p: RBMParams, v: Array, key: Array, steps: int) -> Array:
        def body(i, v):
            return self.gibbs(p, v, jax.random.fold_in(key, i))[0]

        return jax.lax.fori_loop(0, steps, body, v)

    # ---- energies and measures
    def free_energy(self, p: RBMParams, v: Array) -> Array:
        """F(v) with p(v) = exp(-F(v)) / Z; shape v.shape[:-1]."""
        hidden = jnp.sum(jax.nn.softplus(v @ p.W + p.c), axis=-1)
        if self.gaussian:
            return 0.5 * jnp.sum((v - p.b) ** 2, axis=-1) - hidden
        return -(v @ p.b) - hidden

    def reconstruct(self, p: RBMParams, v: Array) -> Array:
        """Mean-field reconstruction E[v' | h = p(h | v)]."""
        return self.visible_mean(p, self.hidden_probs(p, v))

    def cd_statistics(self, p: RBMParams, v_data: Array, v_start: Array, key: Array, k: int
                      ) -> tuple[RBMParams, Array]:
        """The CD-k (or PCD, when `v_start` holds persistent chains) 'gradient' of -log-likelihood:
        negative-phase minus positive-phase statistics, batch means, and the chains' new states.
        Hidden probabilities rather than samples in the statistics (less variance, same mean)."""
        v_neg = self.gibbs_chain(p, v_start, key, k)
        ph_pos, ph_neg = self.hidden_probs(p, v_data), self.hidden_probs(p, v_neg)
        n_pos, n_neg = v_data.shape[0], v_neg.shape[0]
        grads = RBMParams(
            W=v_neg.T @ ph_neg / n_neg - v_data.T @ ph_pos / n_pos,
            b=v_neg.mean(0) - v_data.mean(0),
            c=ph_neg.mean(0) - ph_pos.mean(0),
        )
        return grads, jax.lax.stop_gradient(v_neg)

    def pseudo_log_likelihood(self, p: RBMParams, v: Array, key: Array) -> Array:
        """Stochastic pseudo-log-likelihood per example: V * log sigmoid(F(v~) - F(v)),
        v~ = v with one random bit flipped (binary visibles only)."""
        idx = jax.random.randint(key, v.shape[:-1], 0, v.shape[-1])
        flip = jax.nn.one_hot(idx, v.shape[-1], dtype=v.dtype)
        v_flip = v + flip - 2.0 * v * flip
        return v.shape[-1] * jax.nn.log_sigmoid(self.free_energy(p, v_flip) - self.free_energy(p, v))


def base_rate_bias(mean: Array, eps: float = 1e-3) -> Array:
    """Visible biases of the independent model matching the data's pixel means."""
    m = jnp.clip(jnp.asarray(mean, jnp.float32), eps, 1 - eps)
    return jnp.log(m) - jnp.log1p(-m)


# --------------------------------------------------------------------------- log Z


def exact_log_z(rbm: RBM, p: RBMParams, chunk: int = 4096) -> float:
    """log Z of a Bernoulli RBM by summing over all 2^H hidden states (H <= 20):
    log Z = logsumexp_h [c.h + sum_i softplus(b_i + (W h)_i)]."""
    if rbm.gaussian:
        raise UserError("exact log Z is implemented for Bernoulli visible units only; use model.visible=bernoulli")
    h_units = rbm.hidden_units
    if h_units > MAX_EXACT_HIDDEN:
        raise UserError(f"exact log Z enumerates 2^hidden states; hidden={h_units} is more than "
                        f"{MAX_EXACT_HIDDEN}: use AIS instead")
    return float(_exact_log_z(p, h_units, min(chunk, 2 ** h_units)))


@partial(jax.jit, static_argnames=("h_units", "chunk"))
def _exact_log_z(p: RBMParams, h_units: int, chunk: int) -> Array:
    bits = jnp.arange(h_units, dtype=jnp.uint32)

    def block(start):
        idx = start + jnp.arange(chunk, dtype=jnp.uint32)
        h = ((idx[:, None] >> bits) & 1).astype(jnp.float32)
        terms = h @ p.c + jnp.sum(jax.nn.softplus(h @ p.W.T + p.b), axis=-1)
        return jax.nn.logsumexp(terms)

    starts = jnp.arange(0, 2 ** h_units, chunk, dtype=jnp.uint32)
    return jax.nn.logsumexp(jax.lax.map(block, starts))


def ais_betas(count: int) -> np.ndarray:
    """Inverse temperatures 0 = b_0 < ... < b_K = 1 spaced as Salakhutdinov & Murray's 14,500
    (steps of 1e-3 to 0.5, 1e-4 to 0.9, 1e-4 to 1: the same shares of `count`)."""
    if count < 10:
        raise UserError(f"AIS needs at least 10 intermediate distributions; got {count}")
    shares = np.array([500, 4000, 10000]) / 14500
    n = np.maximum(1, np.round(shares * count).astype(int))
    return np.concatenate([np.linspace(0.0, 0.5, n[0], endpoint=False),
                           np.linspace(0.5, 0.9, n[1], endpoint=False),
                           np.linspace(0.9, 1.0, n[2] + 1)])


@dataclass(frozen=True)
class AISResult:
    log_z: float  # log of the mean importance weight (the estimate of log Z)
    log_z_low: float  # log(mean - 3 std err): the bracket Salakhutdinov & Murray report
    log_z_high: float  # log(mean + 3 std err)
    runs: int
    betas: int


def ais_log_z(rbm: RBM, p: RBMParams, key: Array, runs: int = 100, betas: int = 14500,
              base_bias: Array | None = None) -> AISResult:
    """Annealed importance sampling estimate of log Z from the base-rate model (W = 0,
    visible biases `base_bias`, e.g. the data's) to the RBM, through the geometric path
    p_k(v) ~ exp((1 - beta_k) b_A.v) * exp(-F(v) at weights scaled by beta_k)."""
    if rbm.gaussian:
        raise UserError("AIS is implemented for Bernoulli visible units only; use model.visible=bernoulli")
    b_a = jnp.zeros_like(p.b) if base_bias is None else jnp.asarray(base_bias, jnp.float32)
    schedule = jnp.asarray(ais_betas(betas), jnp.float32)
    log_w = np.asarray(_ais_weights(rbm, p, b_a, schedule, key, runs), np.float64)
    log_z0 = rbm.hidden_units * math.log(2.0) + float(jnp.sum(jax.nn.softplus(b_a)))
    m = log_w.max()
    w = np.exp(log_w - m)
    mean, err = w.mean(), w.std(ddof=1) / math.sqrt(len(w)) if len(w) > 1 else 0.0
    low = math.log(mean - 3 * err) if mean - 3 * err > 0 else -math.inf
    return AISResult(log_z0 + m + math.log(mean), log_z0 + m + low, log_z0 + m + math.log(mean + 3 * err),
                     runs, len(ais_betas(betas)))


@partial(jax.jit, static_argnames=("rbm", "runs"))
def _ais_weights(rbm: RBM, p: RBMParams, b_a: Array, schedule: Array, key: Array, runs: int) -> Array:
    def log_star(beta, v, vw):
        return (1 - beta) * (v @ b_a) + beta * (v @ p.b) + jnp.sum(jax.nn.softplus(beta * (vw + p.c)), -1)

    k0, key = jax.random.split(key)
    v = jax.random.bernoulli(k0, jax.nn.sigmoid(b_a), (runs, rbm.visible_units)).astype(jnp.float32)

    def step(carry, xs):
        v, log_w = carry
        beta_prev, beta, k = xs
        vw = v @ p.W
        log_w = log_w + log_star(beta, v, vw) - log_star(beta_prev, v, vw)
        kh, kv = jax.random.split(k)
        h = jax.random.bernoulli(kh, jax.nn.sigmoid(beta * (vw + p.c))).astype(v.dtype)
        v = jax.random.bernoulli(kv, jax.nn.sigmoid((1 - beta) * b_a + beta * (h @ p.W.T + p.b))).astype(v.dtype)
        return (v, log_w), None

    keys = jax.random.split(key, schedule.shape[0] - 1)
    (_, log_w), _ = jax.lax.scan(step, (v, jnp.zeros((runs,), jnp.float32)), (schedule[:-1], schedule[1:], keys))
    return log_w


def mean_log_likelihood(rbm: RBM, p: RBMParams, x: np.ndarray, log_z: float, batch: int = 2000
                        ) -> tuple[float, float]:
    """(mean log p(v) over `x`, its standard error over the examples) given log Z."""
    f = jax.jit(rbm.free_energy)
    fe = np.concatenate([np.asarray(f(p, jnp.asarray(x[i:i + batch]))) for i in range(0, len(x), batch)])
    ll = -fe.astype(np.float64) - log_z
    return float(ll.mean()), float(ll.std(ddof=1) / math.sqrt(len(ll))) if len(ll) > 1 else 0.0


# --------------------------------------------------------------------------- registry


@register_model("rbm", schema=RBMConfig, trainer="contrastive_divergence")
def build_rbm(cfg: RBMConfig, info: DataInfo) -> RBM:
    """Restricted Boltzmann machine (Bernoulli hidden; Bernoulli or Gaussian visible), CD-k / PCD."""
    if cfg.visible not in VISIBLE:
        raise UserError(f"bad value for 'model.visible': '{cfg.visible}'; allowed values: {', '.join(VISIBLE)}")
    if int(cfg.hidden) < 1:
        raise UserError(f"model.hidden={cfg.hidden} must be at least 1")
    if float(cfg.init_scale) < 0:
        raise UserError(f"model.init_scale={cfg.init_scale} must be >= 0")
    return RBM(int(np.prod(info.input_shape)), int(cfg.hidden), cfg.visible, float(cfg.init_scale),
               bool(cfg.data_init_bias))
