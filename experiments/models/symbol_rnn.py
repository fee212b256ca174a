"""A next-symbol recurrent network over integer tokens: one-hot symbols -> stacked
recurrent layers -> logits over the symbols at every step (batch, time, vocabulary).

Small on purpose: counting (a^n b^n, a^n b^n c^n) needs a few units, and what a cell can
represent, not its size, decides how far beyond the training lengths it stays right.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.forecaster import CELLS, RecurrentLayer, check_recurrent


@dataclass
class SymbolRNNConfig(ModelConfig):
    name: str = "symbol_rnn"
    cell: str = "lstm"  # simple | lstm | gru
    hidden: int = 16
    layers: int = 1
    forget_bias: float = 0.0  # lstm: added to the forget gate's input (1.0: remember by default); 0 = flax's cell

    def __post_init__(self) -> None:
        check_recurrent(self)


class ForgetBiasLSTMCell(nn.RNNCellBase):
    """An LSTM whose forget gate reads `forget_bias` more (Gers et al. 2000; Jozefowicz et al. 2015):
    the cell starts out remembering, which a counter over hundreds of steps needs. Flax's cells
    share one bias initialiser among all gates, hence this cell."""

    features: int
    forget_bias: float = 1.0

    @nn.compact
    def __call__(self, carry, x):
        c, h = carry
        z = (nn.Dense(4 * self.features, use_bias=False, name="input")(x)
             + nn.Dense(4 * self.features, kernel_init=nn.initializers.orthogonal(), name="recurrent")(h))
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f + self.forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    def initialize_carry(self, rng, input_shape):
        shape = tuple(input_shape[:-1]) + (self.features,)
        return jnp.zeros(shape), jnp.zeros(shape)

    @property
    def num_feature_axes(self) -> int:
        return 1


class CountingLayer(nn.Module):
    hidden: int = 16
    forget_bias: float = 1.0

    @property
    def layer_type(self) -> str:
        return "LSTM"

    @nn.compact
    def __call__(self, x):
        return nn.RNN(ForgetBiasLSTMCell(self.hidden, self.forget_bias), name="rnn")(x)


class SymbolRNN(nn.Module):
    cell: str = "lstm"
    hidden: int = 16
    layers: int = 1
    vocab: int = 6
    forget_bias: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        h = jax.nn.one_hot(x, self.vocab)
        for i in range(self.layers):
            if self.cell == "lstm" and self.forget_bias:
                h = CountingLayer(self.hidden, self.forget_bias, name=f"R{i + 1}")(h)
            else:
                h = RecurrentLayer(self.cell, self.hidden, name=f"R{i + 1}")(h)
        return nn.Dense(self.vocab, name="Out")(h)


@register_model("symbol_rnn", schema=SymbolRNNConfig, input_shape="(N, time) integer tokens",
                description="next-symbol RNN: one-hot tokens -> stacked cells -> logits at every step")
def build(cfg: SymbolRNNConfig, info: DataInfo) -> SymbolRNN:
    return SymbolRNN(cfg.cell, cfg.hidden, cfg.layers, info.num_classes or 2, cfg.forget_bias)
