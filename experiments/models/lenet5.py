"""LeNet5 (LeCun et al. 1998) with full C3 connectivity: 61,706 parameters on 28x28 inputs.

Inputs are zero-padded from 28x28 to 32x32 so that C1..C5 see the original geometry.
Subsampling is 2x2 average pooling followed by tanh, as in the paper's table (the paper's
trainable subsampling coefficients are dropped, as in most modern reproductions).

`layout` picks how activations are stored between layers (patch_conv.py): CHWN (batch
minor, convolutions as matmuls), the default because benchmarks/lenet5_layouts.py measured
it faster than NHWC (the backend's own convolution) on CPU and at least as fast on GPU
(numbers: docs/results.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from flax import linen as nn

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import AvgPoolAct, ConvAct, DenseAct
from experiments.models.patch_conv import CHWN, LAYOUTS, from_layout, to_layout


@dataclass
class LeNet5Config(ModelConfig):
    name: str = "lenet5"
    pad_to: int = 32  # zero-pad inputs to this square size before C1
    activation: str = "tanh"
    layout: str = CHWN  # activation layout: CHWN | NHWC (see patch_conv.py)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise UserError(f"bad value for 'model.layout': '{self.layout}'; allowed values: {', '.join(LAYOUTS)}")


class LeNet5(nn.Module):
    pad_to: int = 32
    num_classes: int = 10
    activation: str = "tanh"
    layout: str = CHWN

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        pad = (self.pad_to - x.shape[1]) // 2
        if pad > 0:
            x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        act, layout = self.activation, self.layout
        x = to_layout(x, layout)
        x = ConvAct(6, (5, 5), activation=act, layout=layout, name="C1")(x)
        x = AvgPoolAct(2, activation=act, name="S2")(x)
        x = ConvAct(16, (5, 5), activation=act, layout=layout, name="C3")(x)
        x = AvgPoolAct(2, activation=act, name="S4")(x)
        x = ConvAct(120, (5, 5), activation=act, layout=layout, name="C5")(x)
        x = from_layout(x, layout)
        x = x.reshape(x.shape[0], -1)
        x = DenseAct(84, activation=act, name="F6")(x)
        return DenseAct(self.num_classes, name="Out")(x)


@register_model("lenet5", schema=LeNet5Config, description="LeNet5 CNN (LeCun et al. 1998), 61,706 parameters",
                input_shape="(N, H, W, C) images with H, W <= model.pad_to, e.g. (N, 28, 28, 1)")
def build(cfg: LeNet5Config, info: DataInfo) -> LeNet5:
    return LeNet5(
        pad_to=cfg.pad_to, num_classes=info.num_classes, activation=cfg.activation, layout=cfg.layout
    )
