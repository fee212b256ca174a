"""ResNet (He et al. 2015) with basic blocks: the ImageNet networks and the CIFAR ones.

- `model.variant=cifar` (default), depth 6n+2 (20, 32, 44, 56, 110): the paper's §4.2 network
  for 32x32 images: a 3x3 conv of 16 maps, three stages of n blocks with 16, 32 and 64 maps
  (stride 2 entering stages 2 and 3), global average pooling, the classifier. Shortcuts are
  identities; where the shape changes, option A: the input subsampled with stride 2 and its
  channels zero-padded, so the shortcuts add no parameters (ResNet-20: 269,722 parameters,
  the "0.27M" of the paper's Table 6).
- `model.variant=imagenet`, depth 18 or 34: the paper's Table 1 for 224x224x3 inputs: a 7x7/2
  conv of 64 maps, 3x3/2 max pooling, stages of [2,2,2,2] or [3,4,6,3] blocks with 64..512 maps,
  projection shortcuts (option B: 1x1 conv + BatchNorm) where the shape changes. ResNet-18:
  11,689,512 parameters, as torchvision counts it.

Every conv is followed by BatchNorm (its running statistics live in `batch_stats`: trained
with the batch's statistics, evaluated with the running averages, checkpointed with the
state); convs have no bias (BatchNorm's shift replaces it) and He (fan-out) initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp
from flax import linen as nn

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import BatchNorm, Conv, Dense, GlobalPool, Pool
from experiments.models.patch_conv import AUTO, CHWN, LAYOUTS, NHWC, resolve_layout, to_layout

VARIANTS = ("cifar", "imagenet")
IMAGENET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
IMAGENET_INPUT = DataInfo((224, 224, 3), 1000)


@dataclass
class ResNetConfig(ModelConfig):
    name: str = "resnet"
    depth: int = 20  # cifar: 6n+2 (20, 32, 44, 56, 110); imagenet: 18 or 34
    variant: str = "cifar"  # cifar: 32x32 inputs; imagenet: the 224x224x3, 1,000-class network (for `show`)
    shortcut: str = "auto"  # A (subsample + zero channels), B (1x1 conv projection); auto: A on cifar, B on imagenet
    bn_momentum: float = 0.9  # running average decay (PyTorch's momentum 0.1)
    # how activations are stored, the parameters the same: NHWC (XLA convolutions), CHWN (patch
    # matmuls), auto (CHWN on CPU, where it measured faster; NHWC on GPU)
    layout: str = AUTO

    def __post_init__(self) -> None:
        if self.layout not in (*LAYOUTS, AUTO):
            raise UserError(f"bad value for 'model.layout': '{self.layout}'; allowed values: "
                            f"{', '.join((*LAYOUTS, AUTO))}")
        if self.variant not in VARIANTS:
            raise UserError(f"bad value for 'model.variant': '{self.variant}'; allowed values: {', '.join(VARIANTS)}")
        if self.shortcut not in ("auto", "A", "B"):
            raise UserError(f"bad value for 'model.shortcut': '{self.shortcut}'; allowed values: auto, A, B")
        if self.variant == "imagenet" and self.depth not in IMAGENET_STAGES:
            raise UserError(f"model.depth={self.depth} with model.variant=imagenet: use 18 or 34 "
                            "(or model.variant=cifar with depth 6n+2: 20, 32, 56)")
        if self.variant == "cifar" and (self.depth < 8 or (self.depth - 2) % 6):
            raise UserError(f"model.depth={self.depth} with model.variant=cifar: use 6n+2, e.g. 20, 32, 44, 56, 110 "
                            "(or model.variant=imagenet with depth 18 or 34)")

    def fixed_input(self) -> Optional[DataInfo]:
        return IMAGENET_INPUT if self.variant == "imagenet" else None

    @property
    def option(self) -> str:
        return self.shortcut if self.shortcut != "auto" else ("A" if self.variant == "cifar" else "B")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut; ReLU after the sum."""

    features: int
    stride: int = 1
    shortcut: str = "A"
    bn_momentum: float = 0.9
    layout: str = NHWC
    layer_type = "Basic block"

    @property
    def kernel(self) -> tuple[int, int]:
        return (3, 3)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        layout = self.layout
        bn = lambda name, act="none": BatchNorm(self.bn_momentum, activation=act, layout=layout, name=name)  # noqa: E731
        y = Conv(self.features, 3, self.stride, 1, use_bias=False, init="he", layout=layout, name="conv1")(x)
        y = bn("bn1", "relu")(y, train)
        y = Conv(self.features, 3, 1, 1, use_bias=False, init="he", layout=layout, name="conv2")(y)
        y = bn("bn2")(y, train)
        channel_axis = 0 if layout == CHWN else 3
        if self.stride != 1 or x.shape[channel_axis] != self.features:
            if self.shortcut == "A":
                x = x[:, ::self.stride, ::self.stride]  # H and W are the middle axes in both layouts
                extra = self.features - x.shape[channel_axis]
                pads = [(0, 0)] * 4
                pads[channel_axis] = (extra // 2, extra - extra // 2)
                x = jnp.pad(x, pads)
            else:
                x = Conv(self.features, 1, self.stride, 0, use_bias=False, init="he", layout=layout, name="proj")(x)
                x = bn("proj_bn")(x, train)
        return nn.relu(x + y)


class ResNet(nn.Module):
    stages: tuple[int, ...] = (3, 3, 3)
    widths: tuple[int, ...] = (16, 32, 64)
    imagenet_stem: bool = False
    shortcut: str = "A"
    num_classes: int = 10
    bn_momentum: float = 0.9
    layout: str = NHWC  # how activations are stored; the parameters are the same in both

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        layout = self.layout
        x = to_layout(x, layout)
        if self.imagenet_stem:
            x = Conv(self.widths[0], 7, 2, 3, use_bias=False, init="he", layout=layout, name="conv1")(x)
            x = BatchNorm(self.bn_momentum, activation="relu", layout=layout, name="bn1")(x, train)
            x = Pool("max", 3, 2, 1, layout=layout, name="maxpool")(x)
        else:
            x = Conv(self.widths[0], 3, 1, 1, use_bias=False, init="he", layout=layout, name="conv1")(x)
            x = BatchNorm(self.bn_momentum, activation="relu", layout=layout, name="bn1")(x, train)
        for s, (blocks, width) in enumerate(zip(self.stages, self.widths)):
            for b in range(blocks):
                stride = 2 if s > 0 and b == 0 else 1
                x = BasicBlock(width, stride, self.shortcut, self.bn_momentum, layout,
                               name=f"stage{s + 1}_{b + 1}")(x, train)
        x = GlobalPool("avg", layout=layout, name="avgpool")(x)
        return Dense(self.num_classes, name="fc")(x)


@register_model("resnet", schema=ResNetConfig,
                description="ResNet (He et al. 2015): depth 20/32/56 for 32x32 images, 18/34 ImageNet (model.variant)",
                input_shape="(N, H, W, C) images, e.g. (N, 32, 32, 3)")
def build(cfg: ResNetConfig, info: DataInfo) -> ResNet:
    if len(info.input_shape) != 3:
        raise UserError(f"model=resnet needs images (N, H, W, C); this dataset's inputs are {info.input_shape}")
    layout = resolve_layout(cfg.layout)
    if cfg.variant == "imagenet":
        return ResNet(IMAGENET_STAGES[cfg.depth], (64, 128, 256, 512), True, cfg.option,
                      info.num_classes or 1000, cfg.bn_momentum, layout)
    n = (cfg.depth - 2) // 6
    return ResNet((n, n, n), (16, 32, 64), False, cfg.option, info.num_classes or 10, cfg.bn_momentum, layout)
