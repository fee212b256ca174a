"""Regression: mean squared error on real-valued targets of any shape; RMSE and MAE.

A target per example ([B, ...]) is scored as the mean over its values; per time step
([B, T, ...] with a `mask` [B, T]) each step counts as one example.

Forecasts can be scored beside baselines computed on the same examples from the input
window x (batch, time, 1) itself, so a forecaster's number always has its yardstick:
- `persistence`: every step ahead = the window's last value;
- `seasonal_naive`: step h ahead = the value one season (`objective.season` steps) before
  it, read from the window (needs window >= season and horizon <= season).
Each adds `<baseline>_rmse` and `<baseline>_mae`, and `rmse_ratio_<baseline>` (the model's
RMSE over the baseline's: below 1 beats it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp
import numpy as np

from experiments.errors import UserError
from experiments.objectives import Metric, Objective, ObjectiveConfig, register_objective, weights


@dataclass
class RegressionConfig(ObjectiveConfig):
    name: str = "regression"
    # also score baselines on the same examples: persistence, seasonal_naive, or both comma-separated
    baseline: Optional[str] = None
    season: int = 12  # steps per season for seasonal_naive (12: monthly data, a yearly season)

    def __post_init__(self) -> None:
        for name in baselines(self.baseline):
            if name not in BASELINES:
                raise UserError(f"bad value for 'objective.baseline': '{self.baseline}'; allowed values: "
                                f"{', '.join(BASELINES)} (comma-separated for several), null")
        if self.season < 1:
            raise UserError(f"bad value for 'objective.season': {self.season}; it must be >= 1")


BASELINES = ("persistence", "seasonal_naive")


def baselines(spec: Optional[str]) -> tuple[str, ...]:
    return tuple(b.strip() for b in str(spec).split(",") if b.strip()) if spec else ()


def baseline_forecast(name: str, x: jnp.ndarray, y_shape: tuple, season: int) -> jnp.ndarray:
    """The baseline's forecast of targets `y_shape` (batch, horizon...) from windows x (batch, time, ...)."""
    if name == "persistence":  # every step ahead = the last value seen
        last = x[:, -1].reshape(x.shape[0], -1)
        if last.size == int(np.prod(y_shape)):  # one step of every feature: the last step as it is
            return last.reshape(y_shape)
        return jnp.broadcast_to(last[:, :1].reshape((-1,) + (1,) * (len(y_shape) - 1)), y_shape)
    # seasonal naive: step h (1-based) ahead = x[T-1+h-season], one season before it
    horizon = int(np.prod(y_shape[1:])) if len(y_shape) > 1 else 1
    window = x.shape[1]
    if window < season or horizon > season:
        raise UserError(f"the seasonal-naive baseline needs windows of at least objective.season={season} steps "
                        f"and a horizon of at most that; got windows of {window} and a horizon of {horizon}")
    idx = window - 1 + np.arange(1, horizon + 1) - season
    return x.reshape(x.shape[0], window, -1)[:, idx, 0].reshape(y_shape)


class Regression(Objective):
    def __init__(self, per_step: bool = False, baseline: Optional[str] = None, season: int = 12):
        self.per_step = per_step  # score each time step (axis 1) as its own example
        self.baselines = () if per_step else baselines(baseline)
        self.season = season
        extra = tuple(Metric(f"{b}_{m}", "min") for b in self.baselines for m in ("rmse", "mae"))
        ratios = tuple(Metric(f"rmse_ratio_{b}", "min") for b in self.baselines)
        self.metrics = (Metric("rmse", "min"), Metric("mae", "min"), Metric("loss", "min"), *extra, *ratios)

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
        for name in self.baselines:
            base = (baseline_forecast(name, batch["x"].astype(pred.dtype), y.shape, self.season) - y)
            base = base.reshape(y.shape[:keep] + (-1,))
            out[f"{name}_sq"] = jnp.sum(jnp.mean(base**2, -1) * w)
            out[f"{name}_abs"] = jnp.sum(jnp.mean(jnp.abs(base), -1) * w)
        return out

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        mse = s["loss"] / n
        out = {"loss": mse, "rmse": mse**0.5, "mae": s["abs"] / n}
        for name in self.baselines:
            out[f"{name}_rmse"] = (s[f"{name}_sq"] / n) ** 0.5
            out[f"{name}_mae"] = s[f"{name}_abs"] / n
            out[f"rmse_ratio_{name}"] = out["rmse"] / max(out[f"{name}_rmse"], 1e-12)
        return out


@register_objective("regression", schema=RegressionConfig)
def build(cfg: RegressionConfig) -> Regression:
    """mean squared error; RMSE, MAE (and persistence / seasonal-naive baselines beside them)"""
    return Regression(baseline=cfg.baseline, season=cfg.season)
