"""Small layers that carry their own description (kernel, stride, activation) so that
`nnrun show` can print a faithful per-layer table for any model built from them."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.models.patch_conv import CHWN, NHWC, conv_chwn

ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "none": lambda x: x,
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
}


class ConvAct(nn.Module):
    """Convolution (VALID or SAME) followed by an activation.

    `layout` is how activations are stored: NHWC, or CHWN (batch minor, convolution as
    patch matmuls; see patch_conv.py). The parameters are the same HWIO kernel and bias
    in both, so checkpoints move freely between layouts.
    """

    features: int
    kernel: tuple[int, int] = (5, 5)
    stride: int = 1
    padding: str = "VALID"
    activation: str = "none"
    layout: str = NHWC
    layer_type = "Conv"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kh, kw = self.kernel
        channels = x.shape[0] if self.layout == CHWN else x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.layout == CHWN:
            y = conv_chwn(x, kernel, self.stride, self.padding)
            return ACTIVATIONS[self.activation](y + bias[:, None, None, None])
        if self.padding == "VALID" and self.stride == 1 and x.shape[1:3] == (kh, kw):
            # A VALID conv whose kernel covers the whole input is a dense layer over the
            # flattened patch: one matmul, identical maths; XLA-CPU's conv gradients for
            # this shape (LeNet5's C5) were several times slower than the matmul's.
            y = (x.reshape(x.shape[0], -1) @ kernel.reshape(-1, self.features)).reshape(x.shape[0], 1, 1, -1)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (self.stride, self.stride), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return ACTIVATIONS[self.activation](y + bias)


class AvgPoolAct(nn.Module):
    """Non-overlapping average pooling (window == stride) followed by an activation.

    Height and width are axes 1 and 2 in both NHWC and CHWN, so one code serves both."""

    window: int = 2
    activation: str = "none"
    layer_type = "Avg pool"

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.window, self.window)

    @property
    def stride(self) -> int:
        return self.window

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # reshape+mean instead of reduce_window: same result for non-overlapping windows,
        # and its gradient is a cheap broadcast rather than XLA-CPU's slow window scatter.
        a, h, w, z = x.shape
        k = self.window
        y = x[:, : h - h % k, : w - w % k].reshape(a, h // k, k, w // k, k, z).mean(axis=(2, 4))
        return ACTIVATIONS[self.activation](y)


class DenseAct(nn.Module):
    features: int
    activation: str = "none"
    layer_type = "Dense"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return ACTIVATIONS[self.activation](nn.Dense(self.features, name="dense")(x))
