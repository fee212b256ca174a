"""GoogLeNet / Inception v1 (Szegedy et al. 2014) and a small GoogLeNet for 32x32 images.

An inception module runs four branches side by side on the same input and concatenates
their maps: a 1x1 conv; a 1x1 reduction then a 3x3 conv; a 1x1 reduction then a 5x5 conv;
3x3/1 max pooling then a 1x1 projection. The 1x1 reductions are what keep the network
cheap: 22 layers deep with about a tenth of AlexNet's parameters.

- `model.variant=imagenet`: the paper's Table 1 on 224x224x3, without the two auxiliary
  classifiers (they serve training only): 7x7/2 conv, max pool, LRN, 1x1 and 3x3 convs, LRN,
  max pool, inception 3a-3b, max pool, 4a-4e, max pool, 5a-5b, 7x7 average pooling, dropout
  0.4, the 1,000-way classifier. Convs have biases and ReLU, no BatchNorm (it came later):
  6,998,552 parameters; the paper's Table 1 rounds the weights to 6.8M (biases excluded).
  torchvision's "googlenet" (6,624,904) adds BatchNorm and uses 3x3 kernels in the "5x5"
  branch, so it is not the paper's network.
- `model.variant=cifar` (default): the same nine inception modules on 32x32 images: a 3x3
  stem (64 maps, then 1x1 64 and 3x3 192), max pool to 16x16 for 3a-3b, to 8x8 for 4a-4e,
  to 4x4 for 5a-5b, global average pooling, dropout, the classifier; BatchNorm after every
  conv (model.batchnorm), which lets the 22 layers train without the auxiliary classifiers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp
from flax import linen as nn

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import (BatchNorm, Conv, Dense, Dropout, GlobalPool, LocalResponseNorm, Pool)

VARIANTS = ("cifar", "imagenet")
IMAGENET_INPUT = DataInfo((224, 224, 3), 1000)

# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), Table 1 of the paper
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


@dataclass
class GoogLeNetConfig(ModelConfig):
    name: str = "googlenet"
    variant: str = "cifar"  # cifar: 32x32 inputs; imagenet: the paper's 224x224x3, 1,000-class network
    batchnorm: Optional[bool] = None  # BatchNorm after each conv; default: on for cifar, off (as in the paper) for imagenet
    dropout: float = 0.4

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"bad value for 'model.variant': '{self.variant}'; allowed values: {', '.join(VARIANTS)}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"bad value for 'model.dropout': {self.dropout}; it must be in [0, 1)")

    def fixed_input(self) -> Optional[DataInfo]:
        return IMAGENET_INPUT if self.variant == "imagenet" else None

    def show_notes(self, params: int) -> list[str]:
        """The course's point: GoogLeNet is deeper than AlexNet with about a tenth of its parameters."""
        from experiments.models.alexnet import AlexNetConfig, build as build_alexnet
        from experiments.show import count_params

        alex_cfg = AlexNetConfig(variant=self.variant)
        info = alex_cfg.fixed_input() or DataInfo((32, 32, 3), 10)
        alex = count_params(build_alexnet(alex_cfg, info), info)
        return [f"note: GoogLeNet ({self.variant}) has {params:,} parameters, {params / alex:.3f}x AlexNet's "
                f"{alex:,} ({self.variant}, `model=alexnet model.variant={self.variant}`): 22 layers against 8, "
                "with 1x1 reductions and no large dense layers"]


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1), concatenated."""

    sizes: tuple[int, int, int, int, int, int]
    batchnorm: bool = False
    layer_type = "Inception"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        b1, r3, b3, r5, b5, pp = self.sizes
        conv = lambda y, f, k, name: _conv(y, f, k, 1, self.batchnorm, train, name)  # noqa: E731
        branch1 = conv(x, b1, 1, "1x1")
        branch3 = conv(conv(x, r3, 1, "3x3_reduce"), b3, 3, "3x3")
        branch5 = conv(conv(x, r5, 1, "5x5_reduce"), b5, 5, "5x5")
        branch_pool = conv(Pool("max", 3, 1, 1)(x), pp, 1, "pool_proj")
        return jnp.concatenate([branch1, branch3, branch5, branch_pool], axis=-1)


def _conv(x, features: int, kernel: int, stride: int, batchnorm: bool, train: bool, name: str):
    """conv -> ReLU, or conv -> BatchNorm -> ReLU (the conv then has no bias: BatchNorm's shift replaces it)."""
    if not batchnorm:
        return Conv(features, kernel, stride, kernel // 2, "relu", name=name)(x)
    x = Conv(features, kernel, stride, kernel // 2, use_bias=False, name=name)(x)
    return BatchNorm(activation="relu", name=f"{name}_bn")(x, train)


class ConvBlock(nn.Module):
    """A stem conv (with its BatchNorm when on), as one row of `nnrun show`."""

    features: int
    kernel_size: int
    stride: int = 1
    batchnorm: bool = False
    layer_type = "Conv"
    activation = "relu"

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.kernel_size, self.kernel_size)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return _conv(x, self.features, self.kernel_size, self.stride, self.batchnorm, train, "conv")


class GoogLeNet(nn.Module):
    imagenet: bool = False
    batchnorm: bool = False
    dropout: float = 0.4
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        bn = self.batchnorm
        if self.imagenet:
            x = ConvBlock(64, 7, 2, bn, name="conv1")(x, train)
            x = Pool("max", 3, 2, 1, name="pool1")(x)
            x = LocalResponseNorm(name="lrn1")(x)
            x = ConvBlock(64, 1, 1, bn, name="conv2_reduce")(x, train)
            x = ConvBlock(192, 3, 1, bn, name="conv2")(x, train)
            x = LocalResponseNorm(name="lrn2")(x)
        else:
            x = ConvBlock(64, 3, 1, bn, name="conv1")(x, train)
            x = ConvBlock(64, 1, 1, bn, name="conv2_reduce")(x, train)
            x = ConvBlock(192, 3, 1, bn, name="conv2")(x, train)
        x = Pool("max", 3, 2, 1, name="pool2")(x)
        for name in ("3a", "3b"):
            x = Inception(INCEPTION[name], bn, name=f"inception{name}")(x, train)
        x = Pool("max", 3, 2, 1, name="pool3")(x)
        for name in ("4a", "4b", "4c", "4d", "4e"):
            x = Inception(INCEPTION[name], bn, name=f"inception{name}")(x, train)
        x = Pool("max", 3, 2, 1, name="pool4")(x)
        for name in ("5a", "5b"):
            x = Inception(INCEPTION[name], bn, name=f"inception{name}")(x, train)
        x = GlobalPool("avg", name="avgpool")(x)
        x = Dropout(self.dropout, name="dropout")(x, train)
        return Dense(self.num_classes, name="fc")(x)


@register_model("googlenet", schema=GoogLeNetConfig,
                description="GoogLeNet / Inception v1 (Szegedy et al. 2014): small for 32x32 images, or the paper's "
                            "(model.variant)",
                input_shape="(N, 32, 32, C) images (model.variant=cifar)")
def build(cfg: GoogLeNetConfig, info: DataInfo) -> GoogLeNet:
    imagenet = cfg.variant == "imagenet"
    if len(info.input_shape) != 3:
        raise UserError(f"model=googlenet needs images (N, H, W, C); this dataset's inputs are {info.input_shape}")
    if imagenet and info.input_shape[:2] != (224, 224):
        raise UserError(f"model.variant=imagenet is the paper's GoogLeNet for 224x224x3 inputs; this dataset's are "
                        f"{'x'.join(map(str, info.input_shape))}: use model.variant=cifar for 32x32 images")
    batchnorm = (not imagenet) if cfg.batchnorm is None else cfg.batchnorm
    return GoogLeNet(imagenet, batchnorm, cfg.dropout, info.num_classes or 1000)
