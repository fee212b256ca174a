"""LeNet5 (LeCun et al. 1998) with full C3 connectivity: 61,706 parameters on 28x28 inputs.

Inputs are padded from 28x28 to 32x32 so that C1..C5 see the original geometry. The border
is the background, as the course pads the raw digit with blank (0) pixels: the value a
blank pixel has after the data's normalisation (`DataInfo.background`, -0.4242 for
standardised MNIST), not 0, which after standardisation would be the mean grey.
Subsampling is 2x2 average pooling followed by tanh, as in the paper's table (the paper's
trainable subsampling coefficients are dropped, as in most modern reproductions).

`layout` picks how activations are stored between layers (patch_conv.py): CHWN (batch
minor, convolutions as matmuls), the default because benchmarks/lenet5_layouts.py measured
it faster than NHWC (the backend's own convolution) on CPU and at least as fast on GPU
(numbers: docs/results.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import AvgPoolAct, ConvAct, DenseAct
from experiments.models.patch_conv import CHWN, LAYOUTS, from_layout, to_layout


@dataclass
class LeNet5Config(ModelConfig):
    name: str = "lenet5"
    pad_to: int = 32  # pad inputs to this square size before C1
    pad_value: Optional[float] = None  # the border's value; None = the data's background (a blank pixel)
    activation: str = "tanh"
    layout: str = CHWN  # activation layout: CHWN | NHWC (see patch_conv.py)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise UserError(f"bad value for 'model.layout': '{self.layout}'; allowed values: {', '.join(LAYOUTS)}")


class LeNet5(nn.Module):
    pad_to: int = 32
    pad_value: Union[float, tuple[float, ...]] = 0.0  # a float, or one per channel
    num_classes: int = 10
    activation: str = "tanh"
    layout: str = CHWN

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = pad_with(x, self.pad_to, self.pad_value)
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


def pad_with(x: jnp.ndarray, size: int, value: Union[float, tuple[float, ...]]) -> jnp.ndarray:
    """Centre (N, H, W, C) images in a size x size canvas filled with `value` (per channel if a tuple)."""
    pad = (size - x.shape[1]) // 2
    if pad <= 0:
        return x
    widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    inside = np.pad(np.ones(x.shape[1:3] + (1,), bool), widths[1:])  # static: where the image lies
    return jnp.where(inside, jnp.pad(x, widths), jnp.asarray(value, x.dtype))


@register_model("lenet5", schema=LeNet5Config, description="LeNet5 CNN (LeCun et al. 1998), 61,706 parameters",
                input_shape="(N, H, W, C) images with H, W <= model.pad_to, e.g. (N, 28, 28, 1)")
def build(cfg: LeNet5Config, info: DataInfo) -> LeNet5:
    pad_value = info.background if cfg.pad_value is None else float(cfg.pad_value)
    return LeNet5(
        pad_to=cfg.pad_to, pad_value=pad_value, num_classes=info.num_classes, activation=cfg.activation,
        layout=cfg.layout,
    )
