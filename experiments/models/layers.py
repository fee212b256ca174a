"""Small layers that carry their own description (kernel, stride, activation) so that
`nnrun show` can print a faithful per-layer table for any model built from them."""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "none": lambda x: x,
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
}


class ConvAct(nn.Module):
    """Convolution (VALID or SAME) followed by an activation."""

    features: int
    kernel: tuple[int, int] = (5, 5)
    stride: int = 1
    padding: str = "VALID"
    activation: str = "none"
    layer_type = "Conv"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kh, kw = self.kernel
        if self.padding == "VALID" and x.shape[1:3] == (kh, kw) and self.stride == 1:
            # A VALID conv whose kernel covers the whole input is a dense layer over the
            # flattened patch. Computing it as one matmul is identical maths, and XLA-CPU's
            # conv gradients for this shape are several times slower than the matmul's.
            kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features))
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            y = x.reshape(x.shape[0], -1) @ kernel.reshape(-1, self.features) + bias
            y = y.reshape(x.shape[0], 1, 1, self.features)
        else:
            y = nn.Conv(self.features, self.kernel, strides=self.stride, padding=self.padding, name="conv")(x)
        return ACTIVATIONS[self.activation](y)


class AvgPoolAct(nn.Module):
    """Non-overlapping average pooling (window == stride) followed by an activation."""

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
        b, h, w, c = x.shape
        k = self.window
        y = x[:, : h - h % k, : w - w % k].reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4))
        return ACTIVATIONS[self.activation](y)


class DenseAct(nn.Module):
    features: int
    activation: str = "none"
    layer_type = "Dense"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return ACTIVATIONS[self.activation](nn.Dense(self.features, name="dense")(x))
