"""Stochastic binary networks: the stochastic Hopfield network and the Boltzmann machine.

Units are {0,1} with energy E(n) = -1/2 n^T W n + theta^T n (W symmetric, zero diagonal);
a unit switches on with probability sigmoid((sum_j w_ij n_j - theta_i) / T). At T -> 0
this is the deterministic Hopfield rule; at T > 0 the asynchronous dynamics sample the
Boltzmann distribution p(n) ~ exp(-E(n) / T) at equilibrium, and lowering T along a
schedule (simulated annealing, Kirkpatrick et al. 1983) lets the state climb out of local
minima (spurious states) on its way to a deep one.

For: Gibbs sweeps and annealing (batched, jitted), the `stochastic_hopfield` model (Hebbian
or Storkey storage, annealed recall), exact enumeration of small networks (all 2^N states)
and the `boltzmann` model: a fully connected machine with visible and hidden units and a
connectivity mask, trained by Ackley, Hinton & Sejnowski's rule (training/boltzmann.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models import hopfield as H

Array = jax.Array
SCHEDULES = ("geometric", "linear")
MAX_ENUMERATED = 20


def check_temperature(value: float, key: str) -> float:
    if not float(value) > 0:
        raise UserError(f"{key}={value} must be > 0: a temperature <= 0 has no Boltzmann distribution "
                        "(T -> 0 is the deterministic network: use model=hopfield)")
    return float(value)


def temperatures(t_start: float, t_end: float, sweeps: int, kind: str = "geometric") -> np.ndarray:
    """The annealing schedule: one temperature per sweep from t_start to t_end."""
    check_temperature(t_start, "t_start")
    check_temperature(t_end, "t_end")
    if kind not in SCHEDULES:
        raise UserError(f"unknown annealing schedule '{kind}'; use one of: {', '.join(SCHEDULES)}")
    if sweeps < 1:
        raise UserError(f"annealing needs at least 1 sweep; got {sweeps}")
    if kind == "linear":
        return np.linspace(t_start, t_end, sweeps).astype(np.float32)
    return np.geomspace(t_start, t_end, sweeps).astype(np.float32)


# --------------------------------------------------------------------------- dynamics


def gibbs_sweep(params: H.HopfieldParams, n: Array, key: Array, temperature: Array,
                free: Optional[Array] = None) -> Array:
    """One asynchronous stochastic sweep of a (N,) state in random order; units where
    `free` is False (clamped) keep their values."""
    k_order, k_u = jax.random.split(key)
    order = jax.random.permutation(k_order, n.shape[-1])
    u = jax.random.uniform(k_u, n.shape)
    free = jnp.ones(n.shape, bool) if free is None else free

    def update(k, m):
        i = order[k]
        h = jnp.dot(params.W[i], m, precision=lax.Precision.HIGHEST) - params.theta[i]
        on = (u[i] < jax.nn.sigmoid(h / temperature)).astype(m.dtype)
        return m.at[i].set(jnp.where(free[i], on, m[i]))

    return lax.fori_loop(0, n.shape[-1], update, n)


@jax.jit
def anneal(params: H.HopfieldParams, n0: Array, key: Array, temps: Array) -> tuple[Array, Array]:
    """Gibbs sweeps along the schedule `temps` from (N,) or (B, N) states, then one
    deterministic sweep (the T -> 0 limit) to land in the minimum the walk ended near.
    Returns (final states, energy after every sweep (..., len(temps)))."""
    def one(n, k):
        def sweep(m, xs):
            t, kk = xs
            m = gibbs_sweep(params, m, kk, t)
            return m, H.energy(params, m)

        keys = jax.random.split(k, temps.shape[0] + 1)
        m, es = lax.scan(sweep, jnp.asarray(n, jnp.float32), (temps, keys[:-1]))
        return H.async_sweep(params, m, keys[-1]), es

    if n0.ndim == 1:
        return one(n0, key)
    return jax.vmap(one)(n0, jax.random.split(key, n0.shape[0]))


@partial(jax.jit, static_argnames=("sweeps", "burn_in"))
def sample_equilibrium(params: H.HopfieldParams, n0: Array, key: Array, temperature: float, sweeps: int,
                       burn_in: int) -> Array:
    """States after each of `sweeps` Gibbs sweeps at a fixed temperature, after `burn_in`
    sweeps, from chains (C, N): shape (sweeps, C, N). Their histogram approaches
    exp(-E/T)/Z (tests check it against enumeration)."""
    keys = jax.random.split(key, n0.shape[0])

    def chain(n, k):
        n = lax.fori_loop(0, burn_in, lambda i, m: gibbs_sweep(params, m, jax.random.fold_in(k, i), temperature), n)

        def step(m, i):
            m = gibbs_sweep(params, m, jax.random.fold_in(k, burn_in + i), temperature)
            return m, m

        return lax.scan(step, n, jnp.arange(sweeps))[1]

    return jnp.swapaxes(jax.vmap(chain)(jnp.asarray(n0, jnp.float32), keys), 0, 1)


# --------------------------------------------------------------------------- enumeration


def all_states(n: int) -> np.ndarray:
    """Every {0,1} state of n units, (2^n, n), unit 0 the lowest bit."""
    if n > MAX_ENUMERATED:
        raise UserError(f"enumerating 2^{n} states is too many; exact statistics need at most {MAX_ENUMERATED} units")
    idx = np.arange(2 ** n, dtype=np.int64)
    return ((idx[:, None] >> np.arange(n)) & 1).astype(np.float32)


def boltzmann_distribution(params: H.HopfieldParams, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(states, probabilities) of exp(-E/T)/Z over all states of a small network."""
    s = all_states(params.W.shape[0])
    logits = -np.asarray(H.energy(params, jnp.asarray(s)), np.float64) / temperature
    p = np.exp(logits - logits.max())
    return s, p / p.sum()


# --------------------------------------------------------------------------- stochastic Hopfield model


@dataclass
class StochasticHopfieldConfig(ModelConfig):
    """Config of `stochastic_hopfield`: Hopfield storage, annealed (stochastic) recall."""

    name: str = "stochastic_hopfield"
    rule: str = "hebbian"  # hebbian | storkey
    t_start: float = 0.1  # first sweep's temperature, in units of N (Hebbian fields are about N m / 2)
    t_end: float = 0.01
    sweeps: int = 40  # Gibbs sweeps along the schedule (then one deterministic sweep)
    schedule: str = "geometric"  # geometric | linear
    temperature: float = 0.05  # x N: equilibrium sampling from a stored pattern (plots/equilibrium.png)
    noise_levels: list[float] = field(default_factory=lambda: list(H.DEFAULT_NOISE_LEVELS))
    flip_fractions: list[float] = field(default_factory=lambda: [0.1])

    def __post_init__(self) -> None:
        for key in ("t_start", "t_end", "temperature"):
            check_temperature(getattr(self, key), f"model.{key}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"bad value for 'model.schedule': '{self.schedule}'; allowed values: {', '.join(SCHEDULES)}")
        if self.sweeps < 1:
            raise UserError(f"model.sweeps={self.sweeps} must be at least 1")


@dataclass(frozen=True)
class StochasticHopfieldModel:
    cfg: StochasticHopfieldConfig
    num_units: int

    def store(self, patterns: Array) -> H.HopfieldParams:
        return H.store_with(self.cfg.rule, patterns)

    def params_template(self) -> H.HopfieldParams:
        n = self.num_units
        return H.HopfieldParams(np.zeros((n, n), np.float32), np.zeros((n,), np.float32))

    def schedule(self) -> np.ndarray:
        # temperatures scale with the size of the fields: Hebbian fields grow like N
        c = self.cfg
        scale = self.num_units if self.cfg.rule == "hebbian" else 1.0
        return temperatures(c.t_start, c.t_end, c.sweeps, c.schedule) * scale

    def recall(self, params, n0, key):
        final, _ = anneal(params, jnp.asarray(n0, jnp.float32), key, jnp.asarray(self.schedule()))
        ones = jnp.ones(final.shape[:-1], jnp.int32)
        return final, ones * self.cfg.sweeps, ones.astype(bool)

    def evaluate(self, params, patterns, image_shape, key, trials: int = 4) -> dict[str, Any]:
        return H.evaluate_with(lambda probes, k: self.recall(params, probes, k), patterns, image_shape, key,
                               tuple(self.cfg.noise_levels), trials)

    def capacity(self, params, patterns, key, trials: int = 4) -> dict[str, float]:
        out = {"fixed_points": H.fixed_point_rate(params, patterns)}
        out.update(H.flip_report(lambda probes, k: self.recall(params, probes, k), patterns, key,
                                 tuple(self.cfg.flip_fractions), trials))
        return out

    def pictures(self, params, dataset, out_dir, key) -> list:
        from experiments.energy.pictures import save_escape

        shape = tuple(dataset.meta["image_shape"])
        stuck = find_stuck_state(params, np.asarray(dataset.test.x), key)
        if stuck is None:
            return []
        temps = jnp.asarray(self.schedule())
        frames = anneal_frames(params, stuck, jax.random.fold_in(key, 1), temps)
        paths = save_escape(params, stuck, frames, np.asarray(temps), shape, np.asarray(dataset.test.x), out_dir)
        return paths + [self.equilibrium_picture(params, np.asarray(dataset.test.x), out_dir, jax.random.fold_in(key, 2))]

    def equilibrium_picture(self, params, patterns, out_dir, key, chains: int = 8, sweeps: int = 200) -> Any:
        """plots/equilibrium.png: chains at the fixed `temperature` started on the first stored
        pattern: the energy and the overlap with that pattern after every sweep."""
        from pathlib import Path

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        scale = self.num_units if self.cfg.rule == "hebbian" else 1.0
        t = float(self.cfg.temperature) * scale
        start = jnp.tile(jnp.asarray(patterns[:1]), (chains, 1))
        samples = np.asarray(sample_equilibrium(params, start, key, t, sweeps, 0))  # (sweeps, chains, N)
        energies = np.asarray(H.energy(params, jnp.asarray(samples)))
        overlap = ((2 * samples - 1) @ (2 * patterns[0] - 1)) / patterns.shape[1]
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        axes[0].plot(energies, alpha=0.6)
        axes[0].set_ylabel("energy")
        axes[1].plot(overlap, alpha=0.6)
        axes[1].set_ylabel("overlap with the stored pattern")
        for ax in axes:
            ax.set_xlabel("sweep")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{chains} chains sampling at T = {self.cfg.temperature:g} x N from a stored pattern "
                     f"(mean overlap after sweep 50: {overlap[50:].mean():.3f})")
        fig.tight_layout()
        path = Path(out_dir) / "equilibrium.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def find_stuck_state(params: H.HopfieldParams, patterns: np.ndarray, key: Array, probes: int = 256
                     ) -> Optional[np.ndarray]:
    """A fixed point of the deterministic dynamics that is not a stored pattern (a mixture
    or spurious state), found by recalling from random states; None if every probe found
    a stored pattern."""
    k1, k2 = jax.random.split(key)
    starts = jax.random.bernoulli(k1, 0.5, (probes, patterns.shape[1])).astype(jnp.float32)
    starts = jnp.concatenate([jnp.asarray(mixture_states(patterns)), starts])  # the classic traps first
    final, _, converged = H.recall(params, starts, k2, "async", 100)
    final, converged = np.asarray(final), np.asarray(converged)
    c = H.classify_states(final, np.broadcast_to(patterns[0], final.shape), patterns)
    bad = (c["mixture"] | c["spurious"]) & converged
    if not bad.any():
        return None
    energies = np.asarray(H.energy(params, jnp.asarray(final)))
    return final[np.flatnonzero(bad)[np.argmin(energies[bad])]]  # the deepest trap


def mixture_states(patterns: np.ndarray, limit: int = 64) -> np.ndarray:
    """{0,1} states sign(+-xi_a +-xi_b +-xi_c) of the first triples of stored patterns."""
    from itertools import combinations, product

    xi = 2 * np.asarray(patterns, np.float32) - 1
    out = []
    for a, b, c in combinations(range(len(xi)), 3):
        for sa, sb in product((1, -1), repeat=2):
            out.append((sa * xi[a] + sb * xi[b] + xi[c] > 0).astype(np.float32))
            if len(out) >= limit:
                return np.stack(out)
    return np.stack(out) if out else np.zeros((0, xi.shape[1]), np.float32)


def anneal_frames(params, n0, key, temps) -> np.ndarray:
    """The state after every annealing sweep (and the final deterministic sweep): (S + 1, N)."""
    keys = jax.random.split(key, temps.shape[0] + 1)
    states, n = [], jnp.asarray(n0, jnp.float32)
    sweep = jax.jit(gibbs_sweep)
    for t, k in zip(temps, keys[:-1]):
        n = sweep(params, n, k, t)
        states.append(np.asarray(n))
    states.append(np.asarray(H.async_sweep(params, n, keys[-1])))
    return np.stack(states)


@register_model("stochastic_hopfield", schema=StochasticHopfieldConfig, trainer="hebbian")
def build_stochastic_hopfield(cfg: StochasticHopfieldConfig, info: DataInfo) -> StochasticHopfieldModel:
    """Hopfield storage with stochastic units (sigmoid(input / T)) and annealed recall (simulated annealing)."""
    if cfg.rule not in H.RULES:
        raise UserError(f"bad value for 'model.rule': '{cfg.rule}'; allowed values: {', '.join(H.RULES)}")
    return StochasticHopfieldModel(cfg, int(np.prod(info.input_shape)))


# --------------------------------------------------------------------------- Boltzmann machine


class BMParams(NamedTuple):
    W: Array  # (U, U) symmetric, zero diagonal, zero where the mask has no connection
    b: Array  # (U,) biases (theta = -b)


def as_hopfield(p: BMParams, mask: Array) -> H.HopfieldParams:
    w = 0.5 * (p.W + p.W.T) * mask
    return H.HopfieldParams(w, -p.b)


def connectivity(visible_groups: Sequence[int], hidden: int, within_groups: bool = True,
                 between_groups: bool = False, hidden_hidden: bool = True) -> np.ndarray:
    """(U, U) 0/1 mask, units ordered [group 0, group 1, ..., hidden]: every visible unit
    to every hidden unit; within each visible group if `within_groups`; across visible
    groups if `between_groups` (the 4-2-4 encoder has none: the hidden units must carry
    the code); among hidden units if `hidden_hidden`."""
    sizes = [int(g) for g in visible_groups]
    v = sum(sizes)
    u = v + int(hidden)
    group = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)] + [np.full(hidden, -1)])
    is_h = group < 0
    same = group[:, None] == group[None, :]
    m = np.zeros((u, u), bool)
    m |= is_h[:, None] ^ is_h[None, :]
    if hidden_hidden:
        m |= is_h[:, None] & is_h[None, :]
    vis = ~is_h[:, None] & ~is_h[None, :]
    if within_groups:
        m |= vis & same
    if between_groups:
        m |= vis & ~same
    np.fill_diagonal(m, False)
    return m.astype(np.float32)


@dataclass
class BoltzmannConfig(ModelConfig):
    """Config of the `boltzmann` model (fully connected up to a mask, visible + hidden)."""

    name: str = "boltzmann"
    hidden: int = 2
    groups: int = 2  # visible groups (input, output) of equal size; the mask joins neither directly
    within_groups: bool = True
    hidden_hidden: bool = True
    init_scale: float = 0.1


@dataclass(frozen=True)
class BoltzmannMachine:
    visible: int
    hidden: int
    mask: Any  # np.ndarray (U, U)
    init_scale: float = 0.1
    groups: int = 2

    @property
    def units(self) -> int:
        return self.visible + self.hidden

    def init(self, key: Array) -> BMParams:
        w = self.init_scale * jax.random.normal(key, (self.units, self.units))
        w = 0.5 * (w + w.T) * jnp.asarray(self.mask)
        return BMParams(w, jnp.zeros((self.units,)))

    def hopfield(self, p: BMParams) -> H.HopfieldParams:
        return as_hopfield(p, jnp.asarray(self.mask))

    def exact_free(self, p: BMParams) -> tuple[Array, Array]:
        """Exact free-phase <s s^T> and <s> by enumerating all 2^U states."""
        s = jnp.asarray(all_states(self.units))
        logp = jax.nn.log_softmax(-H.energy(self.hopfield(p), s))
        pr = jnp.exp(logp)
        return jnp.einsum("k,ki,kj->ij", pr, s, s), pr @ s

    def exact_clamped(self, p: BMParams, v: Array) -> tuple[Array, Array]:
        """Exact clamped-phase statistics: visible units fixed to each row of v (B, V),
        hidden states enumerated, averaged over the rows."""
        hs = jnp.asarray(all_states(self.hidden))
        full = jnp.concatenate([jnp.repeat(v[:, None, :], hs.shape[0], 1),
                                jnp.broadcast_to(hs, (v.shape[0],) + hs.shape)], -1)  # (B, 2^H, U)
        pr = jax.nn.softmax(-H.energy(self.hopfield(p), full), axis=-1)
        return (jnp.einsum("bk,bki,bkj->ij", pr, full, full) / v.shape[0],
                jnp.einsum("bk,bki->i", pr, full) / v.shape[0])

    def sampled(self, p: BMParams, key: Array, v: Optional[Array], chains: int, sweeps: int, burn_in: int
                ) -> tuple[Array, Array]:
        """Gibbs estimates at T = 1 of <s s^T> and <s>: free (v None; `chains` chains) or
        clamped (v (B, V) fixed, `chains` chains per row)."""
        hp = self.hopfield(p)
        if v is None:
            n0 = jax.random.bernoulli(key, 0.5, (chains, self.units)).astype(jnp.float32)
            free = jnp.ones((chains, self.units), bool)
        else:
            h0 = jax.random.bernoulli(key, 0.5, (v.shape[0] * chains, self.hidden)).astype(jnp.float32)
            n0 = jnp.concatenate([jnp.repeat(v, chains, axis=0), h0], -1)
            free = jnp.broadcast_to(jnp.arange(self.units) >= self.visible, n0.shape)

        def chain(n, fr, k):
            n = lax.fori_loop(0, burn_in, lambda i, m: gibbs_sweep(hp, m, jax.random.fold_in(k, i), 1.0, fr), n)

            def step(c, i):
                m, acc, acc1 = c
                m = gibbs_sweep(hp, m, jax.random.fold_in(k, burn_in + i), 1.0, fr)
                return (m, acc + jnp.outer(m, m), acc1 + m), None

            zero = jnp.zeros((self.units, self.units))
            (_, acc, acc1), _ = lax.scan(step, (n, zero, jnp.zeros(self.units)), jnp.arange(sweeps))
            return acc / sweeps, acc1 / sweeps

        keys = jax.random.split(jax.random.fold_in(key, 1), n0.shape[0])
        ss, s1 = jax.vmap(chain)(n0, free, keys)
        return ss.mean(0), s1.mean(0)

    def output_probs(self, p: BMParams, v_in: Array) -> Array:
        """Exact p(output unit on | input group clamped) for inputs (B, V/groups): the
        mapping the machine has learned (outputs and hidden units enumerated)."""
        k = self.visible // self.groups
        free = self.units - k
        rest = jnp.asarray(all_states(free))
        full = jnp.concatenate([jnp.repeat(v_in[:, None, :], rest.shape[0], 1),
                                jnp.broadcast_to(rest, (v_in.shape[0],) + rest.shape)], -1)
        pr = jax.nn.softmax(-H.energy(self.hopfield(p), full), axis=-1)
        return jnp.einsum("bk,bki->bi", pr, full)[:, k:self.visible]


@register_model("boltzmann", schema=BoltzmannConfig, trainer="boltzmann")
def build_boltzmann(cfg: BoltzmannConfig, info: DataInfo) -> BoltzmannMachine:
    """Boltzmann machine with hidden units (Ackley, Hinton & Sejnowski 1985), e.g. the 4-2-4 encoder."""
    visible = int(np.prod(info.input_shape))
    if cfg.hidden < 1 or cfg.groups < 1 or visible % cfg.groups:
        raise UserError(f"model.groups={cfg.groups} must divide the {visible} visible units and model.hidden "
                        f"must be >= 1 (got {cfg.hidden})")
    if visible + cfg.hidden > MAX_ENUMERATED:
        raise UserError(f"{visible} visible + {cfg.hidden} hidden units: exact statistics enumerate 2^units "
                        f"states; keep the machine at {MAX_ENUMERATED} units or fewer")
    mask = connectivity([visible // cfg.groups] * cfg.groups, cfg.hidden, cfg.within_groups, False, cfg.hidden_hidden)
    return BoltzmannMachine(visible, int(cfg.hidden), mask, float(cfg.init_scale), int(cfg.groups))
