"""Recurrent networks: a cell run over the time axis, its last output -> a dense layer
(logits for a classifier, values for a regressor such as a one-step forecaster).

Cells: `simple` (Y_t = phi(W_x^T X_t + W_y^T Y_{t-1} + b)), `lstm` and `gru`, all Flax's
own cells run by `nn.RNN` (a lax.scan over time, so the step compiles once).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from flax import linen as nn

from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import ACTIVATIONS, DenseAct

CELLS = ("simple", "lstm", "gru")


@dataclass
class RNNConfig(ModelConfig):
    name: str = "rnn"
    cell: str = "lstm"  # simple | lstm | gru
    hidden: int = 128
    activation: str = "tanh"  # phi of the simple cell

    def __post_init__(self) -> None:
        # checked at config validation, before a run directory exists
        from experiments.errors import UserError

        if self.cell not in CELLS:
            raise UserError(f"bad value for 'model.cell': '{self.cell}'; allowed values: {', '.join(CELLS)}")
        if self.activation not in ACTIVATIONS:
            raise UserError(
                f"bad value for 'model.activation': '{self.activation}'; allowed values: {', '.join(ACTIVATIONS)}"
            )


def make_cell(kind: str, hidden: int, activation: str) -> nn.RNNCellBase:
    if kind == "simple":
        return nn.SimpleCell(hidden, activation_fn=ACTIVATIONS[activation])
    if kind == "lstm":
        return nn.OptimizedLSTMCell(hidden)  # fuses the four gate matmuls into one
    if kind == "gru":
        return nn.GRUCell(hidden)
    raise ValueError(kind)


class Recurrent(nn.Module):
    """One recurrent layer over (batch, time, features); returns the last output."""

    cell: str = "lstm"
    hidden: int = 128
    activation: str = "tanh"

    @property
    def layer_type(self) -> str:
        return {"simple": "Simple RNN", "lstm": "LSTM", "gru": "GRU"}[self.cell]

    @property
    def features(self) -> int:
        return self.hidden

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        outputs = nn.RNN(make_cell(self.cell, self.hidden, self.activation), name="rnn")(x)
        return outputs[:, -1]


class RecurrentNet(nn.Module):
    """A recurrent layer over the time axis; its last output -> a dense layer of `outputs`
    (classes for a classifier, the target's size for a regressor)."""

    cell: str = "lstm"
    hidden: int = 128
    outputs: int = 10
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.ndim == 4:  # images (B, H, W, 1) -> sequences of rows (B, H, W)
            x = x.reshape(x.shape[0], x.shape[1], -1)
        h = Recurrent(self.cell, self.hidden, self.activation, name="R1")(x)
        return DenseAct(self.outputs, name="Out")(h)


@register_model("rnn", schema=RNNConfig,
                description="recurrent net (simple RNN / LSTM / GRU cell), last output -> dense: classes or values")
def build(cfg: RNNConfig, info: DataInfo) -> RecurrentNet:
    return RecurrentNet(cfg.cell, cfg.hidden, info.num_classes or info.output_size, cfg.activation)
