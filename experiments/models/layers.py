"""Small layers that carry their own description (kernel, stride, activation) so that
`nnrun show` can print a faithful per-layer table for any model built from them."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "none": lambda x: x,
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
}


def _conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def shifted_conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """Stride-1 VALID convolution of a single-channel input as a sum of kh*kw shifted,
    scaled copies of the input.

    Why: XLA-CPU lowers a 1-input-channel conv (LeNet5's C1) to a generic kernel that
    ran ~5x slower than this fused elementwise sum on the 2-core machine; the gradients
    stay XLA's own (custom_vjp below), so only the forward pass changes.
    """
    kh, kw = w.shape[:2]
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = jnp.zeros((x.shape[0], oh, ow, w.shape[-1]), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out = out + x[:, i : i + oh, j : j + ow, :] * w[i, j, 0]
    return out


def _shifted_conv_fwd(x, w):
    return shifted_conv(x, w), (x, w)


def _shifted_conv_bwd(residuals, g):
    x, w = residuals
    _, vjp = jax.vjp(_conv, x, w)
    return vjp(g)  # XLA drops the input gradient when nothing uses it


shifted_conv.defvjp(_shifted_conv_fwd, _shifted_conv_bwd)


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
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        plain = self.padding == "VALID" and self.stride == 1
        if plain and x.shape[1:3] == (kh, kw):
            # A VALID conv whose kernel covers the whole input is a dense layer over the
            # flattened patch: one matmul, identical maths; XLA-CPU's conv gradients for
            # this shape (LeNet5's C5) were several times slower than the matmul's.
            y = (x.reshape(x.shape[0], -1) @ kernel.reshape(-1, self.features)).reshape(x.shape[0], 1, 1, -1)
        elif plain and x.shape[-1] == 1:
            y = shifted_conv(x, kernel)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (self.stride, self.stride), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return ACTIVATIONS[self.activation](y + bias)


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
