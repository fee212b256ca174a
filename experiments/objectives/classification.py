"""Classification: softmax cross-entropy on integer labels; accuracy and top-k accuracy.

Targets `y` may have any leading shape: labels per example ([B]) or per time step
([B, T], with an optional `mask` [B, T] for variable lengths); logits add a class axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from experiments.errors import UserError
from experiments.objectives import Metric, Objective, ObjectiveConfig, register_objective, weights


@dataclass
class ClassificationConfig(ObjectiveConfig):
    name: str = "classification"
    top_k: int = 5  # also report top-k accuracy (0 = off)
    label_smoothing: float = 0.0


class Classification(Objective):
    def __init__(self, top_k: int = 5, label_smoothing: float = 0.0):
        self.top_k, self.smoothing = top_k, label_smoothing
        top = (Metric(f"top{top_k}_accuracy", "max"),) if top_k > 1 else ()
        self.metrics = (Metric("accuracy", "max"), *top, Metric("loss", "min"))

    def check(self, outputs_shape: tuple, batch_shapes: dict) -> None:
        y = batch_shapes.get("y")
        if y is None:
            raise UserError("the classification objective needs labels 'y' in the data; this dataset has none")
        if tuple(outputs_shape[:-1]) != tuple(y):
            raise UserError(f"the model's outputs {tuple(outputs_shape)} do not fit labels of shape {tuple(y)} "
                            "(classification wants logits = label shape + one class axis)")

    def sums(self, logits, batch):
        y = batch["y"].astype(jnp.int32)
        w = weights(batch, y.shape)
        if self.smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), self.smoothing)
            ce = optax.softmax_cross_entropy(logits, targets)
        else:
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        label_logit = jnp.take_along_axis(logits, y[..., None], -1)
        rank = jnp.sum(logits > label_logit, -1)  # classes scored above the label: no sort needed
        out = {"loss": jnp.sum(ce * w), "weight": jnp.sum(w), "correct": jnp.sum((rank == 0) * w)}
        if self.top_k > 1:
            out["correct_k"] = jnp.sum((rank < self.top_k) * w)
        return out

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        out = {"loss": s["loss"] / n, "accuracy": s["correct"] / n}
        if self.top_k > 1:
            out[f"top{self.top_k}_accuracy"] = s["correct_k"] / n
        return out


@register_objective("classification", schema=ClassificationConfig)
def build(cfg: ClassificationConfig) -> Classification:
    """cross-entropy on integer labels; accuracy, top-k accuracy"""
    if cfg.top_k < 0:
        raise UserError(f"bad value for 'objective.top_k': {cfg.top_k}; it must be >= 0")
    return Classification(cfg.top_k, cfg.label_smoothing)
