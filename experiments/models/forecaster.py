"""A recurrent forecaster for real time series: stacked recurrent layers over a window of
past values; the last output -> a dense layer of `horizon` values (all steps ahead at once:
a direct multi-step forecast, experiments/data/timeseries.py).

With `residual` the network forecasts the *change* from the window's last value (its
output is added to that value), so an untrained network starts as the persistence
forecast and training only has to learn what persistence misses (the season, the trend,
the smoothing of noise). Without it, it must learn to copy the level through the cell.
With `relative` as well it reads the window minus its last value, so its forecast does not
depend on the level at all: a trending series' test tail, above every training level,
is no extrapolation for it. `highway: K` adds a linear map of the last K inputs to the
forecast (the autoregressive part of LSTNet, Lai et al. 2018): a seasonal difference plus a
drift is linear in the window, so the cell only learns what is not.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from flax import linen as nn

from experiments.models import DataInfo, ModelConfig, register_model

CELLS = {"simple": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


def check_recurrent(cfg) -> None:
    """The checks every recurrent model config shares: a known cell, at least one unit and layer."""
    from experiments.errors import UserError

    if cfg.cell not in CELLS:
        raise UserError(f"bad value for 'model.cell': '{cfg.cell}'; allowed values: {', '.join(CELLS)}")
    for key in ("hidden", "layers"):
        if getattr(cfg, key) < 1:
            raise UserError(f"bad value for 'model.{key}': {getattr(cfg, key)}; it must be >= 1")


@dataclass
class ForecasterConfig(ModelConfig):
    name: str = "forecaster"
    cell: str = "lstm"  # simple | lstm | gru
    hidden: int = 64
    layers: int = 1  # stacked recurrent layers
    dropout: float = 0.0  # between stacked layers, in training
    residual: bool = True  # forecast = last input value + the network's output
    relative: bool = False  # the network reads the window minus its last value: blind to the level
    highway: int = 0  # also a linear map of the last `highway` inputs to the forecast (LSTNet's AR part); 0 = none

    def __post_init__(self) -> None:
        from experiments.errors import UserError

        check_recurrent(self)
        if self.highway < 0:
            raise UserError(f"bad value for 'model.highway': {self.highway}; it must be >= 0 (0 = none)")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"bad value for 'model.dropout': {self.dropout}; it must be in [0, 1)")


class RecurrentLayer(nn.Module):
    """One recurrent layer over (batch, time, features) -> the outputs at every step."""

    cell: str = "lstm"
    hidden: int = 64

    @property
    def layer_type(self) -> str:
        return {"simple": "Simple RNN", "lstm": "LSTM", "gru": "GRU"}[self.cell]

    @property
    def features(self) -> int:
        return self.hidden

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.RNN(CELLS[self.cell](self.hidden), name="rnn")(x)


class Forecaster(nn.Module):
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    residual: bool = True
    outputs: int = 1
    relative: bool = False
    highway: int = 0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        h = x.reshape(x.shape[0], x.shape[1], -1)  # (batch, time, features)
        if self.relative:  # a level never seen in training (a growing series' test tail) looks familiar
            h = h - h[:, -1:]
        inputs = h
        for i in range(self.layers):
            if i:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
            h = RecurrentLayer(self.cell, self.hidden, name=f"R{i + 1}")(h)
        out = nn.Dense(self.outputs, name="Out")(h[:, -1])
        if self.highway:  # a seasonal difference or a drift is linear in the window: no need to learn it through the cell
            recent = inputs[:, -min(self.highway, inputs.shape[1]):].reshape(inputs.shape[0], -1)
            out = out + nn.Dense(self.outputs, name="Highway")(recent)
        if self.residual:
            out = out + x.reshape(x.shape[0], x.shape[1], -1)[:, -1, :1]
        return out


@register_model("forecaster", schema=ForecasterConfig, input_shape="(N, window, 1)",
                description="recurrent forecaster: stacked cells over a window -> the next horizon values")
def build(cfg: ForecasterConfig, info: DataInfo) -> Forecaster:
    return Forecaster(cfg.cell, cfg.hidden, cfg.layers, cfg.dropout, cfg.residual, info.output_size, cfg.relative,
                      cfg.highway)
