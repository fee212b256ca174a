"""A multilayer perceptron on flattened inputs: dense layers with an activation, optional
dropout after each hidden layer, a dense output layer.

Dropout is written out here rather than taken from `nn.Dropout`: the vectorised sweep
(experiments/sweep/vectorized.py) trains trials with different dropout rates as one
vmapped program, so the rate may be a traced array, and `nn.Dropout` branches on the
rate's value in Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import DenseAct


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256])  # units of each hidden layer
    activation: str = "relu"
    dropout: float = 0.0  # rate on each hidden layer's output while training; 0 = off
    # fields that may be arrays (one value per vmapped trial): they only enter arithmetic
    vmappable: ClassVar[tuple[str, ...]] = ("dropout",)


def dropout(x: jnp.ndarray, rate: Any, rng: jax.Array) -> jnp.ndarray:
    """Inverted dropout: zero each unit with probability `rate`, scale the rest by 1/(1-rate)."""
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class MLP(nn.Module):
    hidden: tuple[int, ...] = (256,)
    num_classes: int = 10
    activation: str = "relu"
    dropout: Any = 0.0  # a float, or a traced array in a vectorised sweep

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x.reshape(x.shape[0], -1)
        # a Python 0 switches dropout off; a traced rate is always applied (0 then keeps every unit)
        use_dropout = train and not (isinstance(self.dropout, (int, float)) and self.dropout == 0)
        for i, units in enumerate(self.hidden):
            x = DenseAct(units, activation=self.activation, name=f"H{i + 1}")(x)
            if use_dropout:
                x = dropout(x, self.dropout, self.make_rng("dropout"))
        return DenseAct(self.num_classes, name="Out")(x)


@register_model("mlp", schema=MLPConfig, description="multilayer perceptron on flattened inputs (dense + dropout)")
def build(cfg: MLPConfig, info: DataInfo) -> MLP:
    return MLP(hidden=tuple(cfg.hidden), num_classes=info.num_classes or info.output_size, activation=cfg.activation, dropout=cfg.dropout)
