"""A recurrent sequence model that predicts at every step: language models over tokens,
next-step models over piano rolls.

    tokens (B, T) int  -> embedding (B, T, E)      | piano roll (B, T, K) float -> dense (B, T, E)
    -> dropout -> `layers` stacked cells (LSTM, GRU or simple; Flax's own, run by nn.RNN)
       with dropout after each -> logits (B, T, V): a dense layer, or with `tie=true` the
       embedding matrix itself (the softmax weights are the input embeddings; a dense layer
       first maps the hidden size to the embedding size when they differ).

Generation runs the same parameters one step at a time through `run(x, carry)`, which
returns the per-layer carries: a proposal costs one step, never a re-read of the prefix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import jax.numpy as jnp
from flax import linen as nn

from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import ACTIVATIONS

CELLS = ("simple", "lstm", "gru")


@dataclass
class RNNLMConfig(ModelConfig):
    name: str = "rnn_lm"
    cell: str = "lstm"  # simple | lstm | gru
    hidden: int = 256
    layers: int = 1
    embed: int = 64  # embedding size (token inputs) or input projection size (piano rolls)
    dropout: float = 0.0  # after the embedding and after every recurrent layer, in training
    tie: bool = False  # softmax weights = the embedding matrix (token inputs only)
    activation: str = "tanh"  # phi of the simple cell

    def __post_init__(self) -> None:
        from experiments.errors import UserError

        if self.cell not in CELLS:
            raise UserError(f"bad value for 'model.cell': '{self.cell}'; allowed values: {', '.join(CELLS)}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"bad value for 'model.activation': '{self.activation}'; "
                            f"allowed values: {', '.join(ACTIVATIONS)}")
        for key in ("hidden", "layers", "embed"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'model.{key}': {getattr(self, key)}; it must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"bad value for 'model.dropout': {self.dropout}; it must be in [0, 1)")


def make_cell(kind: str, hidden: int, activation: str) -> nn.RNNCellBase:
    if kind == "lstm":
        return nn.OptimizedLSTMCell(hidden)  # the four gate matmuls fused into one
    if kind == "gru":
        return nn.GRUCell(hidden)
    return nn.SimpleCell(hidden, activation_fn=ACTIVATIONS[activation])


class RecurrentLayer(nn.Module):
    """One recurrent layer over (B, T, F): (carry after the last step, outputs (B, T, hidden))."""

    cell: str = "lstm"
    hidden: int = 256
    activation: str = "tanh"

    @property
    def layer_type(self) -> str:
        return {"simple": "Simple RNN", "lstm": "LSTM", "gru": "GRU"}[self.cell]

    @property
    def features(self) -> int:
        return self.hidden

    @nn.compact
    def __call__(self, x: jnp.ndarray, carry: Any = None) -> tuple[Any, jnp.ndarray]:
        rnn = nn.RNN(make_cell(self.cell, self.hidden, self.activation), return_carry=True, name="rnn")
        return rnn(x, initial_carry=carry)


class RNNLM(nn.Module):
    outputs: int  # vocabulary size, or keys of a piano roll
    tokens: bool  # integer token inputs (embedding) or float vectors (dense projection)
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed: int = 64
    dropout: float = 0.0
    tie: bool = False
    activation: str = "tanh"

    def setup(self) -> None:
        if self.tokens:
            self.embedding = nn.Embed(self.outputs, self.embed)
        else:
            self.projection = nn.Dense(self.embed)
        self.rnns = [RecurrentLayer(self.cell, self.hidden, self.activation, name=f"R{i + 1}")
                     for i in range(self.layers)]
        self.drop = nn.Dropout(self.dropout)
        if self.tie and self.tokens:
            self.to_embed = nn.Dense(self.embed) if self.hidden != self.embed else None
        else:
            self.head = nn.Dense(self.outputs)

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return self.run(x, None, train)[0]

    def run(self, x: jnp.ndarray, carry: Optional[tuple] = None, train: bool = False) -> tuple[jnp.ndarray, tuple]:
        """(logits (B, T, outputs), the carries after the last step); `carry` None = zeros."""
        h = self.embedding(x) if self.tokens else self.projection(x.astype(jnp.float32))
        h = self.drop(h, deterministic=not train)
        carries: list[Any] = []
        for i, rnn in enumerate(self.rnns):
            c, h = rnn(h, None if carry is None else carry[i])
            h = self.drop(h, deterministic=not train)
            carries.append(c)
        if self.tie and self.tokens:
            if self.to_embed is not None:
                h = self.to_embed(h)
            return self.embedding.attend(h), tuple(carries)
        return self.head(h), tuple(carries)


@register_model("rnn_lm", schema=RNNLMConfig, input_shape="(N, T) tokens or (N, T, K) piano rolls",
                description="stacked recurrent sequence model (LSTM/GRU/simple), a prediction at every step: "
                            "language models, piano rolls")
def build(cfg: RNNLMConfig, info: DataInfo) -> RNNLM:
    tokens = info.input_dtype.startswith(("int", "uint"))
    outputs = info.num_classes if tokens else (info.target_shape[-1] if info.target_shape else 1)
    return RNNLM(outputs, tokens, cfg.cell, cfg.hidden, cfg.layers, cfg.embed, cfg.dropout, cfg.tie,
                 cfg.activation)
