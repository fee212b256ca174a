"""The gradient trainer: a Flax model, an objective and an optax optimizer.

Serves every model trained by following a loss gradient: classifiers, regressors,
language models, autoencoders. What is trained *for* is the objective's business
(experiments/objectives/), and everything around the step is the driver's.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from experiments.config import Experiment
from experiments.data import Dataset
from experiments.models import build_model, data_info
from experiments.objectives import build_objective
from experiments.optim import make_schedule, make_transform, traced_fields, STRUCTURAL_FIELDS
from experiments.training import Streams, TrainerConfig, TrainerEntry, register_trainer


@dataclass
class GradientTrainerConfig(TrainerConfig):
    name: str = "gradient"
    # log each layer's gradient norm (mean over the chunk's steps, before clipping) as
    # grad_norm_<layer> in the train records: where gradients vanish or explode
    grad_norms: bool = False


class GradientState(struct.PyTreeNode):
    params: Any
    model_state: Any  # non-parameter collections (e.g. batch_stats); {} for most models
    opt_state: Any


def model_inputs(model: Any, batch: dict) -> dict:
    """The batch entries besides `x` that the model's __call__ names as keyword arguments
    (a recurrent model's `mask` for variable lengths, `first` for restarting streams)."""
    names = inspect.signature(type(model).__call__).parameters
    return {k: jnp.asarray(v) for k, v in batch.items() if k in names and k not in ("self", "x", "train")}


class GradNorms:
    """An objective plus each layer's gradient norm: the train step's sums gain
    grad_norm_<layer> and grad_steps (`of`), finalize turns them into the mean norm."""

    def __init__(self, objective: Any):
        self.inner = objective

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    @staticmethod
    def of(grads: dict) -> dict:
        norms = {f"grad_norm_{k}": optax.tree.norm(v) for k, v in grads.items()}
        return {**norms, "grad_steps": jnp.ones((), jnp.float32)}

    def finalize(self, s: dict) -> dict:
        out = self.inner.finalize({k: v for k, v in s.items() if not k.startswith("grad_")})
        steps = s.get("grad_steps", 0)
        if steps:
            out.update({k: s[k] / steps for k in s if k.startswith("grad_norm_")})
        return out


@dataclass
class GradientSteps:
    model: Any
    tx: optax.GradientTransformation
    objective: Any
    schedule: Optional[optax.Schedule] = None
    # parameters computed from training inputs (RBF centres by k-means): () -> {name: array}
    data_init: Optional[Any] = None
    grad_norms: bool = False

    def init(self, key: jax.Array, batch: dict) -> GradientState:
        variables = dict(self.model.init(key, jnp.asarray(batch["x"]), train=False, **model_inputs(self.model, batch)))
        params = variables.pop("params")
        if self.data_init is not None:
            with jax.ensure_compile_time_eval():  # computed once, on concrete data, even inside a trace
                params = {**params, **self.data_init()}
        return GradientState(params=params, model_state=variables, opt_state=self.tx.init(params))

    def _apply(self, params, model_state, batch: dict, train: bool, rngs: Optional[Streams] = None):
        """Outputs and the updated non-parameter collections (BatchNorm statistics, a
        recurrent model's carried state) in training."""
        variables = {"params": params, **model_state}
        x, more = batch["x"], model_inputs(self.model, batch)
        if not train:
            return self.model.apply(variables, x, train=False, **more), model_state
        # named streams a model may draw from in training: dropout; input noise (denoising
        # autoencoders); latent samples (variational ones)
        streams = ("dropout", "noise", "latent")
        kwargs = {"rngs": {name: rngs[name] for name in streams}} if rngs is not None else {}
        if model_state:
            return self.model.apply(variables, x, train=True, mutable=list(model_state), **more, **kwargs)
        return self.model.apply(variables, x, train=True, **more, **kwargs), model_state

    def train_step(self, state: GradientState, batch: dict, rngs: Streams) -> tuple[GradientState, dict]:
        def loss_fn(params):
            outputs, model_state = self._apply(params, state.model_state, batch, True, rngs)
            sums = self.objective.sums(outputs, batch)
            return self.objective.loss(sums), (sums, model_state)

        (_, (sums, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        if self.grad_norms:
            sums = {**sums, **GradNorms.of(grads)}
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return GradientState(params=params, model_state=model_state, opt_state=opt_state), sums

    def eval_step(self, state: GradientState, batch: dict) -> dict:
        return self.objective.sums(self.outputs(state, batch), batch)

    def outputs(self, state: GradientState, batch: dict):
        """The model's outputs in evaluation mode (also used to check shapes before training)."""
        return self._apply(state.params, state.model_state, batch, False)[0]

    def learning_rate(self, step: int) -> Optional[float]:
        return float(self.schedule(step)) if self.schedule is not None else None


def build_steps(exp: Experiment, data: Dataset, hp: Optional[dict] = None) -> GradientSteps:
    """The steps from the config; with `hp` (inside a vmapped sweep) the traced per-trial
    learning-rate table, optimizer fields and model fields replace the config's values."""
    info = data_info(data)
    objective = build_objective(exp.objective)
    grad_norms = bool(getattr(exp.trainer, "grad_norms", False))
    if grad_norms:
        objective = GradNorms(objective)
    if hp is None:
        from experiments.training.driver import steps_per_epoch

        schedule = make_schedule(exp.schedule, exp.optim.lr, steps_per_epoch(exp, data), exp.trainer.epochs)
        model = build_model(exp.model, info)
        return GradientSteps(model, make_transform(exp.optim, schedule), objective, schedule,
                             data_init=_data_init(model, data), grad_norms=grad_norms)
    model_cfg = dataclasses.replace(exp.model, **hp["model"]) if hp["model"] else exp.model
    tx = make_transform(exp.optim, lambda count: hp["lr"][count], hp["optim"])
    model = build_model(model_cfg, info)
    return GradientSteps(model, tx, objective, data_init=_data_init(model, data), grad_norms=grad_norms)


def _data_init(model: Any, data: Dataset) -> Optional[Any]:
    """A model with `init_from_data(train_split) -> {param: array}` initialises those
    parameters from the training inputs; computed at most once per steps object."""
    if not hasattr(model, "init_from_data"):
        return None
    memo: dict = {}

    def init() -> dict:
        if "params" not in memo:
            memo["params"] = model.init_from_data(data.train)
        return memo["params"]

    return init


def hyperparameters(exps: list[Experiment], steps: list[GradientSteps], total_steps: int) -> dict:
    """The traced per-trial values of a vectorised group: lr per step, and the optimizer
    and model fields that differ within the group. Fields equal in every trial stay
    Python constants, so the program is the single-run one wherever nothing differs."""
    def differing(objs: list, names) -> dict:
        return {n: jnp.asarray([getattr(o, n) for o in objs], jnp.float32) for n in names
                if len({repr(getattr(o, n)) for o in objs}) > 1}

    counts = jnp.arange(total_steps)
    tables = jax.jit(lambda: jnp.stack([jnp.asarray(jax.vmap(s.schedule)(counts), jnp.float32) for s in steps]))
    return {
        "lr": tables(),  # [trials, steps]: one program for all schedules (eagerly, each op would compile alone)
        "optim": differing([e.optim for e in exps], traced_fields(exps[0].optim)),
        "model": differing([e.model for e in exps], tuple(getattr(type(exps[0].model), "vmappable", ()))),
    }


def vmappable(exp: Experiment) -> set[str]:
    """Dotted config keys whose values may differ within a vectorised group."""
    model = getattr(type(exp.model), "vmappable", ())
    schedule = [f"schedule.{f.name}" for f in dataclasses.fields(exp.schedule)]
    return {"seed", "optim.lr", *(f"optim.{k}" for k in traced_fields(exp.optim)), *schedule,
            *(f"model.{k}" for k in model)}


def structural(exp: Experiment) -> set[str]:
    """Vmappable keys whose zero-ness (not value) must agree: it adds or removes a transform or layer."""
    return {*(f"optim.{k}" for k in STRUCTURAL_FIELDS), *(f"model.{k}" for k in getattr(type(exp.model), "vmappable", ()))}


register_trainer("gradient", TrainerEntry(
    schema=GradientTrainerConfig,
    description="gradient descent on the objective's loss (optax): classifiers, regressors, language models, autoencoders",
    steps=build_steps,
    hyperparameters=hyperparameters,
    vmappable=vmappable,
    structural=structural,
    optim_groups=("optim",),
))
