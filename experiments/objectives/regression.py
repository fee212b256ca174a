"""Regression: mean squared error on real-valued targets of any shape; RMSE and MAE.

A target per example ([B, ...]) is scored as the mean over its values; per time step
([B, T, ...] with a `mask` [B, T]) each step counts as one example.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from experiments.errors import UserError
from experiments.objectives import Metric, Objective, ObjectiveConfig, register_objective, weights


@dataclass
class RegressionConfig(ObjectiveConfig):
    name: str = "regression"


class Regression(Objective):
    metrics = (Metric("rmse", "min"), Metric("mae", "min"), Metric("loss", "min"))

    def __init__(self, per_step: bool = False):
        self.per_step = per_step  # score each time step (axis 1) as its own example

    def check(self, outputs_shape, batch_shapes):
        y = batch_shapes.get("y")
        if y is None:
            raise UserError("the regression objective needs targets 'y' in the data; this dataset has none")
        if tuple(outputs_shape) != tuple(y):
            raise UserError(f"the model's outputs {tuple(outputs_shape)} do not match the targets {tuple(y)}; "
                            "set the model's output size to the target's")

    def sums(self, pred, batch):
        y = batch["y"].astype(pred.dtype)
        keep = 2 if self.per_step else 1
        err = (pred - y).reshape(y.shape[:keep] + (-1,))
        w = weights(batch, err.shape[:keep])
        return {"loss": jnp.sum(jnp.mean(err**2, -1) * w), "abs": jnp.sum(jnp.mean(jnp.abs(err), -1) * w),
                "weight": jnp.sum(w)}

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        mse = s["loss"] / n
        return {"loss": mse, "rmse": mse**0.5, "mae": s["abs"] / n}


@register_objective("regression", schema=RegressionConfig)
def build(cfg: RegressionConfig) -> Regression:
    """mean squared error; RMSE, MAE"""
    return Regression()
