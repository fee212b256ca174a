"""Hopfield network of binary {0,1} units with thresholds, as pure JAX functions.

For: Hebbian and Storkey storage of binary patterns, energy, asynchronous and synchronous
recall (batched with vmap), pattern corruption (half images, bit noise, an exact fraction
of flipped bits), a recall evaluation that returns plain Python floats, and the capacity
measures (overlap, exact recall, fixed points, mixture and spurious end states). The dynamics are jitted and loop with lax (no Python loops over units or
sweeps); `recall` and the corruptions can be called inside a caller's jit as well.

Not for: gradient training, continuous ("modern") Hopfield networks, or I/O. Storing,
evaluating and checkpointing are the job of the training loop of the "hopfield" family;
checkpointing works because `HopfieldParams` is a pytree of two arrays.

Conventions:
* States `n` are float arrays of {0,1} (float so that `W @ n` is one matmul), shape (N,)
  or (B, N) for a batch of probes.
* Update rule: n_i <- 1 if theta_i <= sum_j w_ij n_j else 0.
* Storkey weights (Storkey 1997) are real-valued (the 1/N scaling is part of the rule).
* Hebbian weights are NOT divided by N: W is integer-valued, so the field and the
  threshold (a half-integer or integer) compare exactly in float32 and the tie-break of
  the bipolar sign rule (s_i = +1 when the field is exactly 0) is reproduced exactly.
  Scaling by 1/N would change nothing but the rounding of ties.
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

Array = jax.Array

MODES = ("async", "sync")
DEFAULT_NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)

# Integer-valued sums must stay exact; default f32 matmul precision on GPU/TPU (TF32/bf16
# passes) would round large fields and break the tie-break and the energy property.
_EXACT = lax.Precision.HIGHEST


class HopfieldParams(NamedTuple):
    """Weights (N, N), symmetric with zero diagonal, and thresholds (N,). A pytree."""

    W: Array
    theta: Array


# --------------------------------------------------------------------------- storage


def store(patterns: Array) -> HopfieldParams:
    """Hebbian storage of (P, N) {0,1} patterns: W = sum_p s s^T (s = 2n-1), w_ii = 0,
    theta_i = 1/2 sum_j w_ij (the bipolar sign rule rewritten for 0/1 units)."""
    n = jnp.asarray(patterns, dtype=jnp.float32)
    if n.ndim != 2:
        raise ValueError(f"store expects patterns of shape (P, N), got {n.shape}")
    s = 2.0 * n - 1.0
    w = jnp.matmul(s.T, s, precision=_EXACT)
    w = w * (1.0 - jnp.eye(w.shape[0], dtype=w.dtype))
    theta = 0.5 * jnp.sum(w, axis=1)
    return HopfieldParams(W=w, theta=theta)


RULES = ("hebbian", "storkey")


@jax.jit
def store_storkey(patterns: Array) -> HopfieldParams:
    """Storkey's incremental rule on bipolar s = 2n-1, one pattern after another:
    w_ij += (s_i s_j - s_i h_ji - h_ij s_j) / N with the local field
    h_ij = sum_{k != i, j} w_ik s_k; zero diagonal; theta_i = 1/2 sum_j w_ij as for Hebbian.
    Its capacity (about 0.14N -> N / sqrt(2 ln N)) beats Hebbian's 0.138N at finite N,
    because each new pattern is stored against the field the old ones already make."""
    s_all = 2.0 * jnp.asarray(patterns, jnp.float32) - 1.0
    n = s_all.shape[1]

    def add(w, s):
        field = jnp.matmul(w, s, precision=_EXACT)
        # h_ij = field_i - w_ii s_i - w_ij s_j, and w_ii = 0
        h = field[:, None] - w * s[None, :]
        dw = (jnp.outer(s, s) - s[:, None] * h.T - h * s[None, :]) / n
        return (w + dw) * (1.0 - jnp.eye(n, dtype=w.dtype)), None

    w, _ = lax.scan(add, jnp.zeros((n, n), jnp.float32), s_all)
    return HopfieldParams(W=w, theta=0.5 * jnp.sum(w, axis=1))


def store_with(rule: str, patterns: Array) -> HopfieldParams:
    if rule not in RULES:
        raise UserError(f"unknown Hopfield learning rule '{rule}'; use one of: {', '.join(RULES)}")
    return store(patterns) if rule == "hebbian" else store_storkey(patterns)


@jax.jit
def energy(params: HopfieldParams, n: Array) -> Array:
    """E(n) = -1/2 n^T W n + theta^T n; works on (N,) or a batch (..., N)."""
    n = jnp.asarray(n, dtype=params.W.dtype)
    quad = jnp.einsum("...i,ij,...j->...", n, params.W, n, precision=_EXACT)
    return -0.5 * quad + jnp.einsum("...i,i->...", n, params.theta, precision=_EXACT)


# --------------------------------------------------------------------------- dynamics


@jax.jit
def update_unit(params: HopfieldParams, n: Array, i: Array) -> Array:
    """Apply the update rule to unit `i` only (one asynchronous step) of a (N,) state."""
    h = jnp.dot(params.W[i], n, precision=_EXACT)
    return n.at[i].set((params.theta[i] <= h).astype(n.dtype))


def _sweep_in_order(params: HopfieldParams, n: Array, order: Array) -> Array:
    return lax.fori_loop(0, order.shape[0], lambda k, m: update_unit(params, m, order[k]), n)


@jax.jit
def async_sweep(params: HopfieldParams, n: Array, key: Array) -> Array:
    """One asynchronous sweep: every unit updated once, one at a time, in random order."""
    n = jnp.asarray(n, dtype=params.W.dtype)
    return _sweep_in_order(params, n, jax.random.permutation(key, n.shape[-1]))


@jax.jit
def async_trajectory(params: HopfieldParams, n: Array, key: Array) -> tuple[Array, Array, Array]:
    """The same sweep as `async_sweep` (same key -> same order and result), also returning
    the visiting order (N,) and the energy after each single-unit update (N,).

    Exists so that tests and plots can look inside a sweep; recall uses `async_sweep`,
    which skips the O(N^2) energy after each of the N updates.
    """
    n = jnp.asarray(n, dtype=params.W.dtype)
    order = jax.random.permutation(key, n.shape[-1])

    def step(m: Array, i: Array) -> tuple[Array, Array]:
        m = update_unit(params, m, i)
        return m, energy(params, m)

    final, energies = lax.scan(step, n, order)
    return final, order, energies


@jax.jit
def sync_step(params: HopfieldParams, n: Array) -> Array:
    """All units updated at once from the same old state; (N,) or (B, N)."""
    n = jnp.asarray(n, dtype=params.W.dtype)
    h = jnp.einsum("ij,...j->...i", params.W, n, precision=_EXACT)
    return (params.theta <= h).astype(n.dtype)


def _recall_async(params: HopfieldParams, n0: Array, key: Array, max_sweeps: Array):
    # Carry: state, key, sweeps that changed something, stable flag, sweeps run.
    def cond(c):
        _, _, _, stable, total = c
        return jnp.logical_and(~stable, total < max_sweeps)

    def body(c):
        n, k, changing, _, total = c
        k, sub = jax.random.split(k)
        new = async_sweep(params, n, sub)
        changed = jnp.any(new != n)
        return new, k, changing + changed.astype(jnp.int32), ~changed, total + 1

    init = (n0, key, jnp.int32(0), jnp.bool_(False), jnp.int32(0))
    n, _, changing, stable, _ = lax.while_loop(cond, body, init)
    return n, changing, stable


def _recall_sync(params: HopfieldParams, n0: Array, max_sweeps: Array):
    # Symmetric W under synchronous updates ends in a fixed point or a 2-cycle (Goles'
    # theorem), and the dynamics are deterministic, so "new == state two steps ago" means
    # it will cycle forever: stop there instead of burning the remaining max_sweeps.
    def cond(c):
        _, _, steps, fixed, cycled = c
        return jnp.logical_and(~(fixed | cycled), steps < max_sweeps)

    def body(c):
        prev, n, steps, _, _ = c
        new = sync_step(params, n)
        fixed = jnp.all(new == n)
        cycled = jnp.logical_and(jnp.all(new == prev), ~fixed)
        return n, new, steps + (~fixed).astype(jnp.int32), fixed, cycled

    # prev = n0 is harmless: on the first step "new == prev" is "new == n", caught as fixed.
    init = (n0, n0, jnp.int32(0), jnp.bool_(False), jnp.bool_(False))
    _, n, steps, fixed, _ = lax.while_loop(cond, body, init)
    return n, steps, fixed


def _recall_one(params: HopfieldParams, n0: Array, key: Array, mode: str, max_sweeps: Array):
    if mode == "async":
        return _recall_async(params, n0, key, max_sweeps)
    return _recall_sync(params, n0, max_sweeps)


@partial(jax.jit, static_argnames=("mode",))
def _recall_jit(params: HopfieldParams, n0: Array, key: Array, mode: str, max_sweeps: Array):
    if n0.ndim == 1:
        return _recall_one(params, n0, key, mode, max_sweeps)
    keys = jax.random.split(key, n0.shape[0])
    return jax.vmap(lambda n, k: _recall_one(params, n, k, mode, max_sweeps))(n0, keys)


def check_mode(mode: str) -> str:
    """Return `mode` if it is a known update mode, else raise UserError naming the options."""
    if mode not in MODES:
        raise UserError(f"unknown Hopfield update mode '{mode}'; use one of: {', '.join(MODES)}")
    return mode


def recall(
    params: HopfieldParams, n0: Array, key: Array, mode: str = "async", max_sweeps: int = 100
) -> tuple[Array, Array, Array]:
    """Run the dynamics from `n0` ((N,) or a batch (B, N)) until stable or `max_sweeps`.

    Returns (n_final, sweeps, converged). `sweeps` counts the sweeps (async) or steps
    (sync) that changed the state, so a probe that is already a fixed point reports 0;
    async mode needs one extra, unchanged sweep to confirm stability, which also counts
    towards `max_sweeps`. `converged` is False when `max_sweeps` ran out or a sync
    2-cycle was detected (sync stops as soon as it sees one). `key` is unused for sync.
    """
    check_mode(mode)
    n0 = jnp.asarray(n0, dtype=params.W.dtype)
    return _recall_jit(params, n0, key, mode, jnp.int32(max_sweeps))


# --------------------------------------------------------------------------- corruption


def corrupt_half(pattern: Array, key: Array, image_shape: Sequence[int]) -> Array:
    """Replace the bottom half of the image's rows (rows H//2 .. H-1) with random bits.

    `pattern` is flat (N,) with N = H*W in row-major order; vmap for a batch.
    """
    return _corrupt_half(pattern, key, (int(image_shape[0]), int(image_shape[1])))


@partial(jax.jit, static_argnames=("image_shape",))
def _corrupt_half(pattern: Array, key: Array, image_shape: tuple[int, int]) -> Array:
    h, w = image_shape
    pattern = jnp.asarray(pattern)
    bottom = (jnp.arange(h * w) // w) >= h // 2
    noise = jax.random.bernoulli(key, 0.5, pattern.shape).astype(pattern.dtype)
    return jnp.where(bottom, noise, pattern)


@jax.jit
def corrupt_noise(pattern: Array, key: Array, level: float) -> Array:
    """Flip each bit independently with probability `level`; vmap for a batch."""
    pattern = jnp.asarray(pattern)
    flip = jax.random.bernoulli(key, level, pattern.shape)
    return jnp.where(flip, 1 - pattern, pattern)


@partial(jax.jit, static_argnames=("count",))
def corrupt_bits(pattern: Array, key: Array, count: int) -> Array:
    """Flip exactly `count` distinct, randomly chosen bits of a (N,) pattern; vmap for a batch."""
    pattern = jnp.asarray(pattern)
    ranks = jnp.argsort(jax.random.uniform(key, pattern.shape))
    flip = ranks < count
    return jnp.where(flip, 1 - pattern, pattern)


def flipped_count(fraction: float, units: int) -> int:
    """round(fraction * N): the number of bits a "fraction of flipped bits" means."""
    return int(round(float(fraction) * units))


# --------------------------------------------------------------------------- evaluation


@partial(jax.jit, static_argnames=("image_shape", "levels", "trials"))
def _make_probes(
    pats: Array, key: Array, image_shape: tuple[int, int], levels: tuple[float, ...], trials: int
) -> tuple[Array, Array]:
    """(sources (P*trials, N), probes ((1+len(levels))*P*trials, N)): half, then each level."""
    src = jnp.repeat(pats, trials, axis=0)
    m = src.shape[0]
    k_half, k_noise = jax.random.split(key)
    probes = [jax.vmap(lambda x, k: _corrupt_half(x, k, image_shape))(src, jax.random.split(k_half, m))]
    for j, level in enumerate(levels):
        keys = jax.random.split(jax.random.fold_in(k_noise, j), m)
        probes.append(jax.vmap(lambda x, k: corrupt_noise(x, k, level))(src, keys))
    return src, jnp.concatenate(probes)


def _level_key(level: float) -> str:
    # round() so that 0.30000000000000004 from arithmetic still reads "0.3" in reports.
    return str(round(float(level), 6))


def evaluate_recall(
    params: HopfieldParams,
    patterns: Array,
    image_shape: Sequence[int],
    key: Array,
    mode: str = "async",
    noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
    max_sweeps: int = 100,
    trials: int = 4,
) -> dict[str, Any]:
    """Corrupt every stored pattern `trials` times per condition, recall, and score.

    Conditions: "half" (bottom half replaced by random bits) and each noise level (bits
    flipped with that probability). Per condition: bit_accuracy (mean fraction of bits
    equal to the source pattern), exact_recall (fraction of probes recovered exactly),
    mean_sweeps (mean of `recall`'s sweeps, non-converged probes included) and
    converged (fraction that reached a fixed point). Returns
    {"half": {...}, "noise": {"0.1": {...}, ...}, "summary": {"half.exact_recall": ...,
    "noise.0.1.bit_accuracy": ..., ...}} with plain Python floats.
    """
    check_mode(mode)
    return evaluate_with(lambda probes, k: recall(params, probes, k, mode, max_sweeps),
                         patterns, image_shape, key, noise_levels, trials)


def evaluate_with(recall_fn, patterns: Array, image_shape: Sequence[int], key: Array,
                  noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS, trials: int = 4) -> dict[str, Any]:
    """`evaluate_recall` for any memory: `recall_fn(probes, key) -> (final, sweeps, converged)`."""
    pats = jnp.asarray(patterns, dtype=jnp.float32)
    shape = (int(image_shape[0]), int(image_shape[1]))
    levels = tuple(float(x) for x in noise_levels)
    k_probe, k_recall = jax.random.split(key)
    # One batched recall for every condition, so the dynamics compile once.
    src, probes = _make_probes(pats, k_probe, shape, levels, int(trials))
    final, sweeps, converged = recall_fn(probes, k_recall)

    c, m = 1 + len(levels), src.shape[0]
    target = np.tile(np.asarray(src), (c, 1))
    equal = np.asarray(final) == target
    bit_acc = equal.mean(axis=1).reshape(c, m)
    exact = equal.all(axis=1).reshape(c, m)
    sweeps = np.asarray(sweeps).reshape(c, m)
    converged = np.asarray(converged).reshape(c, m)

    def stats(row: int) -> dict[str, float]:
        return {
            "bit_accuracy": float(bit_acc[row].mean()),
            "exact_recall": float(exact[row].mean()),
            "mean_sweeps": float(sweeps[row].mean()),
            "converged": float(converged[row].mean()),
        }

    out: dict[str, Any] = {"half": stats(0), "noise": {}}
    # per stored pattern (src is pattern-major): which ones come back from half-noise copies
    out["half_by_pattern"] = [float(x) for x in exact[0].reshape(pats.shape[0], int(trials)).mean(axis=1)]
    for j, level in enumerate(levels):
        out["noise"][_level_key(level)] = stats(j + 1)
    summary = {f"half.{k}": v for k, v in out["half"].items()}
    for lvl, d in out["noise"].items():
        summary.update({f"noise.{lvl}.{k}": v for k, v in d.items()})
    out["summary"] = summary
    return out


def classify_states(final: np.ndarray, sources: np.ndarray, patterns: np.ndarray) -> dict[str, np.ndarray]:
    """What each end state (B, N) of a recall from a copy of `sources` (B, N) is, given the
    stored `patterns` (P, N) (all {0,1}), as boolean masks and overlaps:
    overlap m = (1/N) sum_i s_i xi_i with the source (bipolar); retrieved (= the source);
    reversed (= the complement of a stored pattern, also a minimum of the Hebbian energy);
    other (= another stored pattern); mixture (= the sign of +-xi_a +-xi_b +-xi_c of the three
    patterns it overlaps most, signs from the overlaps: the symmetric 3-mixtures of Amit,
    Gutfreund & Sompolinsky); spurious (a state that is none of these)."""
    s = 2.0 * np.asarray(final, np.float32) - 1.0
    src = 2.0 * np.asarray(sources, np.float32) - 1.0
    xi = 2.0 * np.asarray(patterns, np.float32) - 1.0
    n = s.shape[1]
    overlap = (s * src).sum(1) / n
    m_all = s @ xi.T / n  # (B, P)
    retrieved = overlap == 1.0
    other = (m_all == 1.0).any(1) & ~retrieved
    reversed_ = (m_all == -1.0).any(1)
    mixture = np.zeros(len(s), bool)
    if xi.shape[0] >= 3:
        top = np.argsort(-np.abs(m_all), axis=1)[:, :3]
        signs = np.sign(np.take_along_axis(m_all, top, 1))
        mix = np.sign(np.einsum("bk,bkn->bn", signs, xi[top]))  # odd sum of +-1: never 0
        mixture = (mix == s).all(1) & ~(retrieved | other | reversed_)
    spurious = ~(retrieved | other | reversed_ | mixture)
    return {"overlap": overlap, "retrieved": retrieved, "other": other, "reversed": reversed_,
            "mixture": mixture, "spurious": spurious}


def recall_summary(final: np.ndarray, sources: np.ndarray, patterns: np.ndarray) -> dict[str, float]:
    """Rates over the probes: mean overlap, exact recall, and where the others ended up
    (mixture / spurious / reversed / other stored pattern), plus distinct spurious states."""
    c = classify_states(final, sources, patterns)
    spurious_states = len({row.tobytes() for row in np.asarray(final)[c["spurious"]].astype(np.uint8)})
    mixture_states = len({row.tobytes() for row in np.asarray(final)[c["mixture"]].astype(np.uint8)})
    return {"overlap": float(c["overlap"].mean()), "exact_recall": float(c["retrieved"].mean()),
            "mixture": float(c["mixture"].mean()), "spurious": float(c["spurious"].mean()),
            "reversed": float(c["reversed"].mean()), "other_pattern": float(c["other"].mean()),
            "mixture_states": float(mixture_states), "spurious_states": float(spurious_states)}


def fixed_point_rate(params: HopfieldParams, patterns: Array) -> float:
    """Fraction of stored patterns that one synchronous step leaves unchanged (exact fixed points)."""
    pats = jnp.asarray(patterns, params.W.dtype)
    return float(jnp.mean(jnp.all(sync_step(params, pats) == pats, axis=1)))


def flip_probes(patterns: Array, key: Array, fraction: float, trials: int) -> tuple[Array, Array]:
    """(sources, probes): each pattern `trials` times with exactly round(fraction*N) bits flipped."""
    pats = jnp.asarray(patterns, jnp.float32)
    src = jnp.repeat(pats, trials, axis=0)
    count = flipped_count(fraction, pats.shape[1])
    probes = jax.vmap(lambda x, k: corrupt_bits(x, k, count))(src, jax.random.split(key, src.shape[0]))
    return src, probes


def flip_report(recall_fn, patterns: Array, key: Array, fractions: Sequence[float], trials: int) -> dict[str, float]:
    """Recall from each fraction of flipped bits: {"flip.<f>.<measure>": value}. `recall_fn`
    maps (probes, key) to (final, sweeps, converged): any memory's recall works."""
    out: dict[str, float] = {}
    pats = np.asarray(patterns, np.float32)
    for j, f in enumerate(fractions):
        k_probe, k_recall = jax.random.split(jax.random.fold_in(key, j))
        src, probes = flip_probes(pats, k_probe, f, trials)
        final, sweeps, converged = recall_fn(probes, k_recall)
        stats = recall_summary(np.asarray(final), np.asarray(src), pats)
        stats["converged"] = float(np.mean(np.asarray(converged)))
        out.update({f"flip.{_level_key(f)}.{k}": v for k, v in stats.items()})
    return out


def energy_trace(params: HopfieldParams, n0: Array, key: Array, max_sweeps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(states, energies) after each single-unit update of asynchronous recall from `n0`,
    sweep after sweep until a sweep changes nothing (or `max_sweeps`): the energy trace
    and the frames of the restored picture. states: (1 + updates, N)."""
    states, energies = [np.asarray(n0, np.float32)], [float(energy(params, n0))]
    n = jnp.asarray(n0, jnp.float32)
    traj = jax.jit(lambda p, n, k: _trajectory_states(p, n, k))
    for i in range(max_sweeps):
        seq, es = traj(params, n, jax.random.fold_in(key, i))
        states.extend(np.asarray(seq))
        energies.extend(np.asarray(es).tolist())
        if bool(jnp.all(seq[-1] == n)):
            break
        n = seq[-1]
    return np.stack(states), np.asarray(energies)


def _trajectory_states(params: HopfieldParams, n: Array, key: Array) -> tuple[Array, Array]:
    order = jax.random.permutation(key, n.shape[-1])

    def step(m, i):
        m = update_unit(params, m, i)
        return m, (m, energy(params, m))

    _, (seq, es) = lax.scan(step, n, order)
    return seq, es


# --------------------------------------------------------------------------- registry


@dataclass
class HopfieldConfig(ModelConfig):
    """Config of the `hopfield` model (no trainable hyperparameters: storage is Hebbian)."""

    name: str = "hopfield"
    rule: str = "hebbian"  # hebbian | storkey
    update: str = "async"  # "async" (random-order single-unit updates) or "sync"
    max_sweeps: int = 100
    noise_levels: list[float] = field(default_factory=lambda: list(DEFAULT_NOISE_LEVELS))
    flip_fractions: list[float] = field(default_factory=lambda: [0.1])  # recall from exactly this share of bits flipped


@dataclass(frozen=True)
class HopfieldModel:
    """What the hopfield training loop needs: the config bound to the module functions."""

    cfg: HopfieldConfig
    num_units: int

    def store(self, patterns: Array) -> HopfieldParams:
        return store_with(self.cfg.rule, patterns)

    def params_template(self) -> HopfieldParams:
        n = self.num_units
        return HopfieldParams(np.zeros((n, n), np.float32), np.zeros((n,), np.float32))

    def recall(self, params: HopfieldParams, n0: Array, key: Array) -> tuple[Array, Array, Array]:
        return recall(params, n0, key, self.cfg.update, self.cfg.max_sweeps)

    def evaluate(
        self, params: HopfieldParams, patterns: Array, image_shape: Sequence[int], key: Array, trials: int = 4
    ) -> dict[str, Any]:
        return evaluate_recall(
            params, patterns, image_shape, key, self.cfg.update, tuple(self.cfg.noise_levels),
            self.cfg.max_sweeps, trials,
        )

    def restoration(self) -> bool:  # the trainer draws the update-by-update picture
        return True

    def capacity(self, params: HopfieldParams, patterns: Array, key: Array, trials: int = 4) -> dict[str, float]:
        """Fixed points and recall from each `flip_fractions` share of flipped bits."""
        out = {"fixed_points": fixed_point_rate(params, patterns)}
        out.update(flip_report(lambda probes, k: self.recall(params, probes, k), patterns, key,
                               tuple(self.cfg.flip_fractions), trials))
        return out


@register_model("hopfield", schema=HopfieldConfig, trainer="hebbian")
def build_hopfield(cfg: HopfieldConfig, info: DataInfo) -> HopfieldModel:
    """Binary Hopfield network with Hebbian or Storkey storage; recall by async or sync updates."""
    check_mode(cfg.update)
    if cfg.rule not in RULES:
        raise UserError(f"bad value for 'model.rule': '{cfg.rule}'; allowed values: {', '.join(RULES)}")
    if int(cfg.max_sweeps) < 1:
        raise UserError(f"model.max_sweeps={cfg.max_sweeps} must be at least 1")
    bad = [x for x in cfg.noise_levels if not 0.0 <= float(x) <= 1.0]
    if bad:
        raise UserError(f"model.noise_levels must lie in [0, 1]; got {bad}")
    bad = [x for x in cfg.flip_fractions if not 0.0 <= float(x) <= 1.0]
    if bad:
        raise UserError(f"model.flip_fractions must lie in [0, 1]; got {bad}")
    return HopfieldModel(cfg=cfg, num_units=int(np.prod(info.input_shape)))
