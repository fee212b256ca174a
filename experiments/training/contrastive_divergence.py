"""Contrastive divergence: the step-based trainer of restricted Boltzmann machines.

A step runs k block-Gibbs steps from the data (CD-k) or from persistent chains (PCD,
Tieleman 2008), takes negative-minus-positive statistics as the 'gradient' of the
negative log-likelihood and applies it with the configured optax chain: so `optim`
(sgd, momentum, adam), `optim.weight_decay` and `schedule` act on RBM updates as they do
on any gradient. The persistent chains live in the state, which the driver checkpoints:
a resumed PCD run continues the same chains.

Metrics (per chunk, per epoch on validation, and on test): reconstruction `mse` (primary,
named as the `reconstruction` objective's so that sweeps rank by it),
mean free energy (its validation-minus-training difference is the overfitting gap) and
the stochastic pseudo-log-likelihood. After training, `report` writes `rbm_report.json`
(AIS log Z and test log-likelihood, the free-energy gap, a logistic classifier on the
hidden probabilities) and the figures: filters, long-chain samples, reconstructions.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
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
from experiments.models.rbm import RBM, RBMParams, ais_log_z, base_rate_bias, mean_log_likelihood
from experiments.objectives import Metric, Objective, weights
from experiments.optim import make_schedule, make_transform
from experiments.training import Streams, TrainerConfig, TrainerEntry, register_trainer

log = logging.getLogger("nnrun")


@dataclass
class CDTrainerConfig(TrainerConfig):
    name: str = "contrastive_divergence"
    k: int = 1  # Gibbs steps per update
    persistent: bool = False  # PCD: chains carried across updates (one per batch row)
    # after training (0 switches each off): AIS for log Z and the test log-likelihood
    ais_runs: int = 100
    ais_betas: int = 14500
    classifier_epochs: int = 30  # logistic regression on the hidden probabilities (labelled data)
    sample_steps: int = 1000  # Gibbs steps of the chains drawn in plots/samples.png

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise UserError(f"bad value for 'trainer.k': {self.k}; CD needs at least 1 Gibbs step")
        for key in ("ais_runs", "ais_betas", "classifier_epochs", "sample_steps"):
            if getattr(self, key) < 0:
                raise UserError(f"bad value for 'trainer.{key}': {getattr(self, key)}; it must be >= 0")


class CDState(struct.PyTreeNode):
    params: RBMParams
    opt_state: Any
    chains: jax.Array  # persistent chains (B, V); unused (but kept, shape-stable) for CD-k


class EnergyObjective(Objective):
    """RBM measures as sums: squared reconstruction error, free energy, pseudo-log-likelihood."""

    metrics = (Metric("mse", "min"), Metric("free_energy", "min"), Metric("pseudo_ll", "max"),
               Metric("loss", "min"))

    def recon(self, outputs):
        return outputs

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        return {"mse": s["sq"] / n, "free_energy": s["fe"] / n, "pseudo_ll": s["pll"] / n, "loss": s["loss"] / n}


@dataclass
class CDSteps:
    rbm: RBM
    tx: optax.GradientTransformation
    k: int
    persistent: bool
    data_mean: np.ndarray
    chain_count: int  # persistent chains: one per row of a training batch
    schedule: Optional[optax.Schedule] = None
    objective: Objective = EnergyObjective()

    def init(self, key: jax.Array, batch: dict) -> CDState:
        params = self.rbm.init(key, self.data_mean)
        return CDState(params, self.tx.init(params), self._fresh_chains(jax.random.fold_in(key, 1), params, batch))

    def _fresh_chains(self, key, params, batch):
        # Chains start from the visible biases' own distribution (the base rates).
        shape = (self.chain_count, self.rbm.visible_units)
        return jax.random.bernoulli(key, jax.nn.sigmoid(params.b), shape).astype(jnp.float32)

    def _flat(self, batch: dict) -> jax.Array:
        x = batch["x"]
        return x.reshape(x.shape[0], -1).astype(jnp.float32)

    def train_step(self, state: CDState, batch: dict, rngs: Streams) -> tuple[CDState, dict]:
        v = self._flat(batch)
        chains = state.chains
        start = chains if self.persistent else v  # the phases are averaged separately: the counts may differ
        grads, v_neg = self.rbm.cd_statistics(state.params, v, start, rngs["noise"], self.k)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_chains = v_neg if self.persistent else chains
        sums = self._sums(state.params, batch, rngs["noise"])
        return CDState(params, opt_state, new_chains), sums

    def _sums(self, params: RBMParams, batch: dict, key: jax.Array) -> dict:
        v = self._flat(batch)
        w = weights(batch, (v.shape[0],))
        sq = jnp.mean((self.rbm.reconstruct(params, v) - v) ** 2, -1)
        fe = self.rbm.free_energy(params, v)
        pll = (self.rbm.pseudo_log_likelihood(params, v, jax.random.fold_in(key, 7)) if not self.rbm.gaussian
               else jnp.zeros_like(fe))
        return {"loss": jnp.sum(sq * w), "sq": jnp.sum(sq * w), "fe": jnp.sum(fe * w), "pll": jnp.sum(pll * w),
                "weight": jnp.sum(w)}

    def eval_step(self, state: CDState, batch: dict) -> dict:
        return self._sums(state.params, batch, jax.random.key(0))

    def outputs(self, state: CDState, batch: dict):
        """Mean-field reconstructions, shaped like the inputs (for the reconstruction figure)."""
        x = batch["x"]
        return self.rbm.reconstruct(state.params, self._flat(batch)).reshape(x.shape)

    def learning_rate(self, step: int) -> Optional[float]:
        return float(self.schedule(step)) if self.schedule is not None else None

    def figures(self, exp: Experiment, state: CDState, data: Dataset, out_dir: Path) -> list[Path]:
        """After training: the report (AIS, classifier, free-energy gap) and the RBM's pictures."""
        return report(self, exp, state.params, data, Path(out_dir))


def build_steps(exp: Experiment, data: Dataset, hp: Optional[dict] = None) -> CDSteps:
    if hp is not None:
        raise UserError("contrastive divergence runs are not vectorised; run the sweep with sweep.vectorize=false")
    rbm = build_model(exp.model, data_info(data))
    if not isinstance(rbm, RBM):
        raise UserError(f"trainer=contrastive_divergence trains RBMs; model '{exp.model.name}' is not one (model=rbm)")
    x = data.train.x
    mean = x.reshape(len(x), -1).mean(0)
    if not rbm.gaussian and (x.min() < 0 or x.max() > 1):
        raise UserError("Bernoulli visible units need data in [0, 1]; use data=binarized_mnist "
                        "(or model.visible=gaussian for real-valued data)")
    from experiments.training.driver import steps_per_epoch

    schedule = make_schedule(exp.schedule, exp.optim.lr, steps_per_epoch(exp, data), exp.trainer.epochs)
    t = exp.trainer
    return CDSteps(rbm, make_transform(exp.optim, schedule), int(t.k), bool(t.persistent), mean, int(t.batch_size),
                   schedule)


# --------------------------------------------------------------------------- after training


def report(steps: CDSteps, exp: Experiment, params: RBMParams, data: Dataset, plots: Path) -> list[Path]:
    rbm, t = steps.rbm, exp.trainer
    key = jax.random.fold_in(jax.random.key(exp.seed), 99)
    flat = lambda split: split.x.reshape(len(split), -1).astype(np.float32)  # noqa: E731
    out: dict[str, Any] = {}
    fe = jax.jit(rbm.free_energy)
    train_fe = float(np.mean(np.asarray(fe(params, flat(data.train)[:10000]))))
    other = data.val if data.val is not None else data.test
    out["free_energy_gap"] = {"train": train_fe, "heldout": float(np.mean(np.asarray(fe(params, flat(other)[:10000])))),
                              "heldout_split": "val" if data.val is not None else "test"}
    out["free_energy_gap"]["gap"] = out["free_energy_gap"]["heldout"] - train_fe
    if t.ais_runs and not rbm.gaussian:
        t0 = time.perf_counter()
        res = ais_log_z(rbm, params, jax.random.fold_in(key, 1), t.ais_runs, t.ais_betas, base_rate_bias(steps.data_mean))
        ll, se = mean_log_likelihood(rbm, params, flat(data.test), res.log_z)
        train_ll, _ = mean_log_likelihood(rbm, params, flat(data.train)[:10000], res.log_z)
        out["ais"] = {"log_z": res.log_z, "log_z_3se": [res.log_z_low, res.log_z_high], "runs": res.runs,
                      "betas": res.betas, "test_log_likelihood": ll, "test_log_likelihood_se": se,
                      "train_log_likelihood": train_ll, "seconds": time.perf_counter() - t0}
        log.info("AIS (%d runs, %d betas): log Z %.2f, test log-likelihood %.2f +- %.2f nats",
                 res.runs, res.betas, res.log_z, ll, se)
    if t.classifier_epochs and data.test.y is not None and data.num_classes:
        out["classifier"] = feature_classifier(rbm, params, data, t.classifier_epochs, exp.seed)
        log.info("logistic layer on RBM features: test accuracy %.4f", out["classifier"]["test_accuracy"])
    run_dir = plots.parent
    (run_dir / "rbm_report.json").write_text(json.dumps(out, indent=2))
    paths = [run_dir / "rbm_report.json"]
    if getattr(data, "meta", {}).get("image_shape"):
        paths += draw_rbm(rbm, params, data, plots, jax.random.fold_in(key, 2), t.sample_steps)
    return paths


def feature_classifier(rbm: RBM, params: RBMParams, data: Dataset, epochs: int, seed: int) -> dict:
    """A logistic layer (softmax regression, Adam) on p(h | v): the RBM as a feature learner."""
    feats = jax.jit(rbm.hidden_probs)
    def features(split):
        x = split.x.reshape(len(split), -1).astype(np.float32)
        return np.concatenate([np.asarray(feats(params, x[i:i + 5000])) for i in range(0, len(x), 5000)])

    xtr, ytr, xte, yte = features(data.train), data.train.y, features(data.test), data.test.y
    k = int(data.num_classes)
    w = {"W": jnp.zeros((xtr.shape[1], k)), "b": jnp.zeros((k,))}
    tx = optax.adam(1e-2)
    opt = tx.init(w)

    @jax.jit
    def epoch(w, opt, perm):
        def step(carry, idx):
            w, opt = carry
            def loss(w):
                logits = xtr_d[idx] @ w["W"] + w["b"]
                return optax.softmax_cross_entropy_with_integer_labels(logits, ytr_d[idx]).mean() + 1e-4 * jnp.sum(w["W"] ** 2)
            g = jax.grad(loss)(w)
            up, opt = tx.update(g, opt, w)
            return (optax.apply_updates(w, up), opt), None
        (w, opt), _ = jax.lax.scan(step, (w, opt), perm)
        return w, opt

    xtr_d, ytr_d = jnp.asarray(xtr), jnp.asarray(ytr)
    batch = 100
    n = (len(xtr) // batch) * batch
    key = jax.random.key(seed)
    for e in range(epochs):
        perm = jax.random.permutation(jax.random.fold_in(key, e), len(xtr))[:n].reshape(-1, batch)
        w, opt = epoch(w, opt, perm)
    acc = lambda x, y: float(np.mean(np.argmax(x @ np.asarray(w["W"]) + np.asarray(w["b"]), -1) == y))  # noqa: E731
    return {"test_accuracy": acc(xte, yte), "train_accuracy": acc(xtr, ytr), "epochs": epochs,
            "features": int(xtr.shape[1])}


def draw_rbm(rbm: RBM, params: RBMParams, data: Dataset, plots: Path, key: jax.Array, sample_steps: int) -> list[Path]:
    """plots/filters.png (the first 100 hidden units' weights) and plots/samples.png (chains
    started from test images after 0, ..., `sample_steps` Gibbs steps; mean-field pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = tuple(data.meta["image_shape"])
    plots.mkdir(parents=True, exist_ok=True)
    w = np.asarray(params.W)
    n = min(100, w.shape[1])
    cols = 10
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            ax.imshow(w[:, i].reshape(shape), cmap="RdBu_r", vmin=-np.abs(w[:, i]).max(), vmax=np.abs(w[:, i]).max())
        ax.axis("off")
    fig.suptitle(f"RBM filters (first {n} of {w.shape[1]} hidden units)")
    fig.tight_layout()
    fig.savefig(plots / "filters.png", dpi=80)
    plt.close(fig)

    v = jnp.asarray(data.test.x[:10].reshape(10, -1), jnp.float32)
    checkpoints = [0] + [int(round(sample_steps * f)) for f in (0.01, 0.1, 0.3, 1.0)] if sample_steps else [0]
    chain = jax.jit(rbm.gibbs_chain, static_argnums=(3,))
    frames, done = [], 0
    for i, c in enumerate(sorted(set(checkpoints))):
        if c > done:
            v = chain(params, v, jax.random.fold_in(key, i), c - done)
            done = c
        frames.append((c, np.asarray(rbm.reconstruct(params, v))))
    fig, axes = plt.subplots(len(frames), 10, figsize=(10, 1.1 * len(frames)), squeeze=False)
    for r, (c, imgs) in enumerate(frames):
        for j in range(10):
            axes[r][j].imshow(imgs[j].reshape(shape), cmap="gray", vmin=0, vmax=1)
            axes[r][j].set_xticks([])
            axes[r][j].set_yticks([])
        axes[r][0].set_ylabel(f"{c}", rotation=0, labelpad=18)
    fig.suptitle("Gibbs chains from test digits (rows: steps)")
    fig.tight_layout()
    fig.savefig(plots / "samples.png", dpi=80)
    plt.close(fig)
    return [plots / "filters.png", plots / "samples.png"]


register_trainer("contrastive_divergence", TrainerEntry(
    schema=CDTrainerConfig,
    description="contrastive divergence CD-k / persistent CD for RBMs, updates through the optax chain",
    steps=build_steps,
    optim_groups=("optim",),
))
