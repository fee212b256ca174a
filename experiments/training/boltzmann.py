"""The Boltzmann learning rule (Ackley, Hinton & Sejnowski 1985): the trainer of `boltzmann`.

For a machine at T = 1 with visible units clamped to the data, dG/dw_ij = -(p+_ij - p-_ij):
the correlation <s_i s_j> with the visible units clamped (hidden units free) minus the same
correlation when the whole network runs free. A step forms those two statistics, either
exactly (`statistics: exact`, enumerating the 2^units states: a machine of <= 20 units) or
by Gibbs sampling as in the original paper (`statistics: sampling`: chains, sweeps, burn-in,
at T = 1 instead of an annealing schedule), and applies free-minus-clamped as the gradient
through the configured optax chain (so `optim`, weight decay and `schedule` apply).

Metrics: `mse` between p(output unit on | input clamped) and the target (primary), `accuracy`
(share of patterns whose every output unit is on the right side of 1/2: the mapping is
reproduced) and `kl` = G, the divergence between the data and the free-running machine.

`restarts: R` trains R machines from independent initialisations side by side (one vmapped
program) and reports the one with the lowest exact G over the training patterns after each
update. Why: the rule is gradient descent on G, and small machines like the 4-2-4 encoder stop
on plateaus where both hidden units carry the same bit; which one a machine reaches is decided
by its initialisation (measured: a single machine learns all 4 patterns in a minority of seeds).
Ackley, Hinton and Sejnowski escaped those plateaus with annealing and noisy clamping instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from experiments.config import Experiment
from experiments.data import Dataset
from experiments.errors import UserError
from experiments.models import build_model, data_info
from experiments.models import hopfield as H
from experiments.models.boltzmann import BMParams, BoltzmannMachine, all_states
from experiments.objectives import Metric, Objective, weights
from experiments.optim import make_schedule, make_transform
from experiments.training import Streams, TrainerConfig, TrainerEntry, register_trainer

STATISTICS = ("exact", "sampling")


@dataclass
class BoltzmannTrainerConfig(TrainerConfig):
    name: str = "boltzmann"
    statistics: str = "exact"  # exact (enumeration) | sampling (Gibbs chains at T = 1)
    chains: int = 64  # sampling: free-phase chains; clamped phase: chains per pattern
    sweeps: int = 20  # sampling: sweeps averaged per phase and update
    burn_in: int = 10  # sampling: sweeps discarded first
    restarts: int = 1  # machines trained side by side from independent inits; the lowest G is reported

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.statistics not in STATISTICS:
            raise UserError(f"bad value for 'trainer.statistics': '{self.statistics}'; "
                            f"allowed values: {', '.join(STATISTICS)}")
        for key in ("chains", "sweeps", "restarts"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'trainer.{key}': {getattr(self, key)}; it must be >= 1")
        if self.burn_in < 0:
            raise UserError(f"bad value for 'trainer.burn_in': {self.burn_in}; it must be >= 0")


class BMState(struct.PyTreeNode):
    """`restarts` machines: every leaf of params and opt_state has a leading restart axis;
    `best` is the restart with the lowest G after the last update."""

    params: BMParams
    opt_state: Any
    best: jax.Array


class EncoderObjective(Objective):
    metrics = (Metric("mse", "min"), Metric("accuracy", "max"), Metric("kl", "min"), Metric("loss", "min"))

    def recon(self, outputs):
        return outputs

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        return {"mse": s["sq"] / n, "accuracy": s["correct"] / n, "kl": s["kl"] / n, "loss": s["loss"] / n}


@dataclass
class BoltzmannSteps:
    machine: BoltzmannMachine
    tx: optax.GradientTransformation
    cfg: BoltzmannTrainerConfig
    patterns: Any  # np.ndarray (P, V): the distinct training patterns, for choosing a restart by G
    schedule: Optional[optax.Schedule] = None
    objective: Objective = EncoderObjective()

    @property
    def num_patterns(self) -> int:
        return len(self.patterns)

    def init(self, key: jax.Array, batch: dict) -> BMState:
        params = jax.vmap(self.machine.init)(jax.random.split(key, self.cfg.restarts))
        return BMState(params, jax.vmap(self.tx.init)(params), self._best(params))

    def statistics(self, params: BMParams, v: jax.Array, key: jax.Array):
        m, c = self.machine, self.cfg
        if c.statistics == "exact":
            return m.exact_clamped(params, v), m.exact_free(params)
        k1, k2 = jax.random.split(key)
        return (m.sampled(params, k1, v, max(1, c.chains // v.shape[0]), c.sweeps, c.burn_in),
                m.sampled(params, k2, None, c.chains, c.sweeps, c.burn_in))

    def _update(self, params: BMParams, opt_state: Any, v: jax.Array, key: jax.Array):
        """One machine's update by the Boltzmann rule."""
        (ss_c, s_c), (ss_f, s_f) = self.statistics(params, v, key)
        mask = jnp.asarray(self.machine.mask)
        grads = BMParams(W=(ss_f - ss_c) * mask, b=s_f - s_c)  # -dG/dw = p+ - p-: descend on free - clamped
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return BMParams(0.5 * (params.W + params.W.T) * mask, params.b), opt_state

    def _best(self, params: BMParams) -> jax.Array:
        """The restart with the lowest exact G over the distinct training patterns."""
        g = jax.vmap(lambda p: -jnp.mean(self.log_marginal(p, jnp.asarray(self.patterns))))(params)
        return jnp.argmin(g)

    def chosen(self, state: BMState) -> BMParams:
        return jax.tree.map(lambda a: a[state.best], state.params)

    def train_step(self, state: BMState, batch: dict, rngs: Streams) -> tuple[BMState, dict]:
        v = batch["x"].reshape(batch["x"].shape[0], -1).astype(jnp.float32)
        keys = jax.random.split(rngs["noise"], self.cfg.restarts)
        params, opt_state = jax.vmap(self._update, in_axes=(0, 0, None, 0))(state.params, state.opt_state, v, keys)
        return BMState(params, opt_state, self._best(params)), self.eval_step(state, batch)

    def outputs(self, state: BMState, batch: dict) -> jax.Array:
        """p(output unit on | input group clamped), (B, V / groups), of the chosen machine."""
        v = batch["x"].reshape(batch["x"].shape[0], -1).astype(jnp.float32)
        k = self.machine.visible // self.machine.groups
        return self.machine.output_probs(self.chosen(state), v[:, :k])

    def eval_step(self, state: BMState, batch: dict) -> dict:
        v = batch["x"].reshape(batch["x"].shape[0], -1).astype(jnp.float32)
        k = self.machine.visible // self.machine.groups
        probs, target = self.outputs(state, batch), v[:, k:self.machine.visible]
        w = weights(batch, (v.shape[0],))
        sq = jnp.mean((probs - target) ** 2, -1)
        correct = jnp.all((probs > 0.5) == (target > 0.5), -1).astype(jnp.float32)
        kl = -jnp.log(self.num_patterns) - self.log_marginal(self.chosen(state), v)
        return {"loss": jnp.sum(sq * w), "sq": jnp.sum(sq * w), "correct": jnp.sum(correct * w),
                "kl": jnp.sum(kl * w), "weight": jnp.sum(w)}

    def log_marginal(self, params: BMParams, v: jax.Array) -> jax.Array:
        """log p(v) of the free-running machine, hidden units summed out (exact)."""
        m = self.machine
        hp = m.hopfield(params)
        log_z = jax.nn.logsumexp(-H.energy(hp, jnp.asarray(all_states(m.units))))
        hs = jnp.asarray(all_states(m.hidden))
        full = jnp.concatenate([jnp.repeat(v[:, None, :], hs.shape[0], 1),
                                jnp.broadcast_to(hs, (v.shape[0],) + hs.shape)], -1)
        return jax.nn.logsumexp(-H.energy(hp, full), axis=-1) - log_z

    def learning_rate(self, step: int) -> Optional[float]:
        return float(self.schedule(step)) if self.schedule is not None else None


def build_steps(exp: Experiment, data: Dataset, hp: Optional[dict] = None) -> BoltzmannSteps:
    if hp is not None:
        raise UserError("Boltzmann machine runs are not vectorised; run the sweep with sweep.vectorize=false")
    machine = build_model(exp.model, data_info(data))
    if not isinstance(machine, BoltzmannMachine):
        raise UserError(f"trainer=boltzmann trains Boltzmann machines; model '{exp.model.name}' is not one (model=boltzmann)")
    x = data.train.x
    if ((x != 0) & (x != 1)).any():
        raise UserError("a Boltzmann machine's visible units are binary: the data must hold only 0 and 1")
    from experiments.training.driver import steps_per_epoch

    schedule = make_schedule(exp.schedule, exp.optim.lr, steps_per_epoch(exp, data), exp.trainer.epochs)
    patterns = np.unique(x.reshape(len(x), -1).astype(np.float32), axis=0)
    return BoltzmannSteps(machine, make_transform(exp.optim, schedule), exp.trainer, patterns, schedule)


register_trainer("boltzmann", TrainerEntry(
    schema=BoltzmannTrainerConfig,
    description="Ackley-Hinton-Sejnowski learning (clamped minus free correlations) for Boltzmann machines",
    steps=build_steps,
    optim_groups=("optim",),
))
