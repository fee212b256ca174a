"""Regression: mean squared error on real-valued targets of any shape; RMSE and MAE.

A target per example ([B, ...]) is scored as the mean over its values; per time step
([B, T, ...] with a `mask` [B, T]) each step counts as one example.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp

from experiments.errors import UserError
from experiments.objectives import Metric, Objective, ObjectiveConfig, register_objective, weights


@dataclass
class RegressionConfig(ObjectiveConfig):
    name: str = "regression"
    # also score a baseline on the same examples: persistence (the last input step as the forecast)
    baseline: Optional[str] = None


class Regression(Objective):
    def __init__(self, per_step: bool = False, baseline: Optional[str] = None):
        self.per_step = per_step  # score each time step (axis 1) as its own example
        self.baseline = baseline
        extra = (Metric("persistence_rmse", "min"),) if baseline == "persistence" else ()
        self.metrics = (Metric("rmse", "min"), Metric("mae", "min"), Metric("loss", "min"), *extra)

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
        out = {"loss": jnp.sum(jnp.mean(err**2, -1) * w), "abs": jnp.sum(jnp.mean(jnp.abs(err), -1) * w),
               "weight": jnp.sum(w)}
        if self.baseline == "persistence":  # forecast = the window's last step
            base = (batch["x"][:, -1].reshape(y.shape) - y).reshape(y.shape[:keep] + (-1,))
            out["persistence_sq"] = jnp.sum(jnp.mean(base**2, -1) * w)
        return out

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        mse = s["loss"] / n
        out = {"loss": mse, "rmse": mse**0.5, "mae": s["abs"] / n}
        if "persistence_sq" in s:
            out["persistence_rmse"] = (s["persistence_sq"] / n) ** 0.5
        return out


@register_objective("regression", schema=RegressionConfig)
def build(cfg: RegressionConfig) -> Regression:
    """mean squared error; RMSE, MAE (and a persistence baseline's RMSE)"""
    if cfg.baseline not in (None, "persistence"):
        raise UserError(f"bad value for 'objective.baseline': '{cfg.baseline}'; allowed values: persistence, null")
    return Regression(baseline=cfg.baseline)
