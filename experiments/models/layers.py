"""Small layers that carry their own description (kernel, stride, activation) so that
`nnrun show` can print a faithful per-layer table for any model built from them."""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.models.patch_conv import CHWN, NHWC, conv_chwn, conv_nhwc

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


POOLS = ("max", "avg", "min")


def pool(x: jnp.ndarray, kind: str, window: int | tuple[int, int], stride: int | None = None,
         padding: str | int = "VALID") -> jnp.ndarray:
    """Max, average or min pooling of (N, H, W, C) images over `window` with `stride`
    (default: the window, i.e. non-overlapping); padding VALID, SAME or a number of pixels
    on each side (padded pixels never win a max/min nor count in an average). Min pooling is
    -max(-x): it keeps the darkest value of each window, as max keeps the brightest."""
    padding = conv_padding(padding) if isinstance(padding, int) else padding.upper()
    window = (window, window) if isinstance(window, int) else tuple(window)
    stride = window if stride is None else ((stride, stride) if isinstance(stride, int) else tuple(stride))
    if kind == "max":
        return nn.max_pool(x, window, stride, padding)
    if kind == "min":
        return -nn.max_pool(-x, window, stride, padding)
    if kind == "avg":
        # SAME-padded windows at the border average only the pixels that exist
        return nn.avg_pool(x, window, stride, padding, count_include_pad=False)
    raise ValueError(f"unknown pooling '{kind}'; use one of {', '.join(POOLS)}")


class Pool(nn.Module):
    """A pooling layer (max, avg or min), any square window and stride, VALID or SAME.
    Pooling runs over the two middle axes, so the one call serves NHWC and CHWN."""

    kind: str = "max"
    window: int = 2
    stride: int | None = None
    padding: str | int = "VALID"
    layout: str = NHWC

    @property
    def layer_type(self) -> str:
        return f"{self.kind.capitalize()} pool"

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.window, self.window)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return pool(x, self.kind, self.window, self.stride or self.window, self.padding)


INITS = {
    "lecun": nn.initializers.lecun_normal(),
    # He et al. 2015, fan-out, as torchvision initialises its ResNets
    "he": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
    "glorot": nn.initializers.glorot_uniform(),
}


def conv_padding(padding: str | int) -> str | tuple:
    """'same' / 'valid' (any case) or an int: that many zeros on each side."""
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return padding.upper()


class Conv(nn.Module):
    """A 2-D convolution over NHWC images (any stride, padding, groups), then an activation."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: str | int = "same"
    activation: str = "none"
    groups: int = 1  # AlexNet's two-GPU halves: each output map sees 1/groups of the input maps
    use_bias: bool = True
    init: str = "lecun"
    layer_type = "Conv"

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.kernel_size, self.kernel_size)

    layout: str = NHWC  # NHWC: XLA's convolution; CHWN: patch matmuls (patch_conv.py), same parameters

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = PatchConv if self.layout == CHWN else partial(nn.Conv, conv_general_dilated=conv_nhwc)
        y = conv(self.features, self.kernel, (self.stride, self.stride), conv_padding(self.padding),
                 feature_group_count=self.groups, use_bias=self.use_bias, kernel_init=INITS[self.init],
                 name="conv")(x)
        return ACTIVATIONS[self.activation](y)


class PatchConv(nn.Module):
    """nn.Conv's parameters (an HWIO kernel of in/groups inputs, a bias) and maths, on CHWN
    activations, each group one patch matmul (patch_conv.py explains why this layout pays on
    XLA-CPU; ResNet-20's measurement is in docs/results.md)."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: str | tuple = "SAME"
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        g = self.feature_group_count
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[0] // g, self.features))
        stride = self.strides[0]
        y = jnp.concatenate([conv_chwn(xg, kg, stride, self.padding)
                             for xg, kg in zip(jnp.split(x, g, axis=0), jnp.split(kernel, g, axis=3))], axis=0)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))[:, None, None, None]
        return y


class Dense(nn.Module):
    """A fully connected layer over the last axis, then an activation."""

    features: int
    activation: str = "none"
    init: str = "lecun"
    layer_type = "Dense"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return ACTIVATIONS[self.activation](nn.Dense(self.features, kernel_init=INITS[self.init], name="dense")(x))


class Activation(nn.Module):
    activation: str = "relu"
    layer_type = "Activation"

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return ACTIVATIONS[self.activation](x)


class Flatten(nn.Module):
    layer_type = "Flatten"

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return x.reshape(x.shape[0], -1)


class GlobalPool(nn.Module):
    """Average (or max) over all positions: (N, H, W, C) -> (N, C)."""

    kind: str = "avg"
    layer_type = "Global pool"

    layout: str = NHWC

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = x.max(axis=(1, 2)) if self.kind == "max" else x.mean(axis=(1, 2))
        return y.T if self.layout == CHWN else y  # CHWN leaves (C, N)


class BatchNorm(nn.Module):
    """Batch normalisation: batch statistics in training, running averages (kept in the
    `batch_stats` collection, checkpointed with the state) in evaluation."""

    momentum: float = 0.9
    epsilon: float = 1e-5
    activation: str = "none"
    layer_type = "BatchNorm"

    layout: str = NHWC  # the channel axis: last (NHWC) or first (CHWN)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        y = nn.BatchNorm(use_running_average=not train, axis=0 if self.layout == CHWN else -1,
                         momentum=self.momentum, epsilon=self.epsilon, name="bn")(x)
        return ACTIVATIONS[self.activation](y)


class Dropout(nn.Module):
    rate: float = 0.5
    layer_type = "Dropout"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return nn.Dropout(self.rate, deterministic=not train)(x) if self.rate > 0 else x


class LocalResponseNorm(nn.Module):
    """AlexNet's local response normalisation across channels (Krizhevsky et al. 2012, §3.3):
    b = a / (k + alpha * sum of a^2 over the n neighbouring maps)^beta. No parameters."""

    size: int = 5
    k: float = 2.0
    alpha: float = 1e-4
    beta: float = 0.75
    layer_type = "LRN"

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        half = self.size // 2
        sq = jnp.pad(x * x, [(0, 0)] * (x.ndim - 1) + [(half, half)])
        window = sum(sq[..., i:i + x.shape[-1]] for i in range(self.size))
        return x / (self.k + self.alpha * window) ** self.beta
