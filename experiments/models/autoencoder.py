"""A dense autoencoder: encoder layers narrowing to a code, a mirrored decoder back to the
input size. Outputs are flat (batch, input size): reconstructions for an MSE objective,
logits of pixel intensities for a binary cross-entropy one (objective=reconstruction).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
from flax import linen as nn

from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import DenseAct


@dataclass
class AutoencoderConfig(ModelConfig):
    name: str = "autoencoder"
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # encoder layers; the decoder mirrors them
    code: int = 32  # size of the bottleneck
    activation: str = "relu"


class Autoencoder(nn.Module):
    hidden: tuple[int, ...]
    code: int
    outputs: int
    activation: str = "relu"

    def encode(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.reshape(x.shape[0], -1)
        for i, units in enumerate(self.hidden):
            x = DenseAct(units, activation=self.activation, name=f"E{i + 1}")(x)
        return DenseAct(self.code, name="Code")(x)

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        for i, units in enumerate(reversed(self.hidden)):
            z = DenseAct(units, activation=self.activation, name=f"D{i + 1}")(z)
        return DenseAct(self.outputs, name="Out")(z)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return self.decode(self.encode(x))


@register_model("autoencoder", schema=AutoencoderConfig,
                description="dense autoencoder: input -> hidden -> code -> mirrored hidden -> input size")
def build(cfg: AutoencoderConfig, info: DataInfo) -> Autoencoder:
    size = 1
    for d in info.input_shape:
        size *= d
    return Autoencoder(tuple(cfg.hidden), cfg.code, size, cfg.activation)
