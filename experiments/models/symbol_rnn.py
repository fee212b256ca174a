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
from experiments.models.forecaster import CELLS, RecurrentLayer


@dataclass
class SymbolRNNConfig(ModelConfig):
    name: str = "symbol_rnn"
    cell: str = "lstm"  # simple | lstm | gru
    hidden: int = 16
    layers: int = 1

    def __post_init__(self) -> None:
        from experiments.errors import UserError

        if self.cell not in CELLS:
            raise UserError(f"bad value for 'model.cell': '{self.cell}'; allowed values: {', '.join(CELLS)}")
        for key in ("hidden", "layers"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'model.{key}': {getattr(self, key)}; it must be >= 1")


class SymbolRNN(nn.Module):
    cell: str = "lstm"
    hidden: int = 16
    layers: int = 1
    vocab: int = 6

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        h = jax.nn.one_hot(x, self.vocab)
        for i in range(self.layers):
            h = RecurrentLayer(self.cell, self.hidden, name=f"R{i + 1}")(h)
        return nn.Dense(self.vocab, name="Out")(h)


@register_model("symbol_rnn", schema=SymbolRNNConfig, input_shape="(N, time) integer tokens",
                description="next-symbol RNN: one-hot tokens -> stacked cells -> logits at every step")
def build(cfg: SymbolRNNConfig, info: DataInfo) -> SymbolRNN:
    return SymbolRNN(cfg.cell, cfg.hidden, cfg.layers, info.num_classes or 2)
