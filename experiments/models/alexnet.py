"""AlexNet (Krizhevsky, Sutskever and Hinton 2012) and a small AlexNet for 32x32 images.

- `model.variant=imagenet`: the paper's network on 224x224x3: 96 kernels of 11x11x3 with stride
  4 (padding 2, so the maps are 55x55 as in the paper's figure), ReLU, local response
  normalisation, 3x3/2 overlapping max pooling; conv2, conv4 and conv5 grouped in two (each
  GPU's half of the maps sees only its own half of the inputs, the paper's Figure 2);
  two dense layers of 4,096 with dropout 0.5; 1,000 classes. 60,965,224 parameters: the
  two-GPU network the course describes (96 first-layer kernels). torchvision's "alexnet" is
  a later single-tower variant (64, 192, 384, 256, 256 maps, 61,100,840 parameters); it is
  not the network of the paper, so it is not the one reproduced here.
- `model.variant=cifar` (default): the same shape of network for 32x32 images: five 3x3 conv
  layers (64, 192, 384, 256, 256 maps) with ReLU, three 3x3/2 max poolings (32 -> 16 -> 8
  -> 4), two dense layers (model.hidden, default 1,024) with dropout, no grouping, no LRN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp
from flax import linen as nn

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import Conv, Dense, Dropout, Flatten, LocalResponseNorm, Pool

VARIANTS = ("cifar", "imagenet")
IMAGENET_INPUT = DataInfo((224, 224, 3), 1000)


@dataclass
class AlexNetConfig(ModelConfig):
    name: str = "alexnet"
    variant: str = "cifar"  # cifar: 32x32 inputs; imagenet: the paper's 224x224x3, 1,000-class network
    hidden: int = 1024  # units of each dense layer on cifar (imagenet: 4,096, as in the paper)
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"bad value for 'model.variant': '{self.variant}'; allowed values: {', '.join(VARIANTS)}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"bad value for 'model.dropout': {self.dropout}; it must be in [0, 1)")

    def fixed_input(self) -> Optional[DataInfo]:
        return IMAGENET_INPUT if self.variant == "imagenet" else None


class AlexNet(nn.Module):
    imagenet: bool = False
    hidden: int = 1024
    dropout: float = 0.5
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.imagenet:
            x = Conv(96, 11, 4, 2, "relu", name="conv1")(x)
            x = LocalResponseNorm(name="lrn1")(x)
            x = Pool("max", 3, 2, name="pool1")(x)
            x = Conv(256, 5, 1, 2, "relu", groups=2, name="conv2")(x)
            x = LocalResponseNorm(name="lrn2")(x)
            x = Pool("max", 3, 2, name="pool2")(x)
            x = Conv(384, 3, 1, 1, "relu", name="conv3")(x)
            x = Conv(384, 3, 1, 1, "relu", groups=2, name="conv4")(x)
            x = Conv(256, 3, 1, 1, "relu", groups=2, name="conv5")(x)
            x = Pool("max", 3, 2, name="pool5")(x)
        else:
            x = Conv(64, 3, 1, 1, "relu", name="conv1")(x)
            x = Pool("max", 3, 2, 1, name="pool1")(x)
            x = Conv(192, 3, 1, 1, "relu", name="conv2")(x)
            x = Pool("max", 3, 2, 1, name="pool2")(x)
            x = Conv(384, 3, 1, 1, "relu", name="conv3")(x)
            x = Conv(256, 3, 1, 1, "relu", name="conv4")(x)
            x = Conv(256, 3, 1, 1, "relu", name="conv5")(x)
            x = Pool("max", 3, 2, 1, name="pool5")(x)
        x = Flatten(name="flatten")(x)
        x = Dropout(self.dropout, name="drop6")(x, train)
        x = Dense(self.hidden, "relu", name="fc6")(x)
        x = Dropout(self.dropout, name="drop7")(x, train)
        x = Dense(self.hidden, "relu", name="fc7")(x)
        return Dense(self.num_classes, name="fc8")(x)


@register_model("alexnet", schema=AlexNetConfig,
                description="AlexNet (Krizhevsky et al. 2012): small for 32x32 images, or the paper's (model.variant)",
                input_shape="(N, 32, 32, C) images (model.variant=cifar)")
def build(cfg: AlexNetConfig, info: DataInfo) -> AlexNet:
    imagenet = cfg.variant == "imagenet"
    if len(info.input_shape) != 3 or (not imagenet and min(info.input_shape[:2]) < 8):
        raise UserError(f"model=alexnet needs images (N, H, W, C) of at least 8x8; this dataset's inputs are "
                        f"{info.input_shape}")
    if imagenet and info.input_shape[:2] != (224, 224):
        raise UserError(f"model.variant=imagenet is the paper's AlexNet for 224x224x3 inputs; this dataset's are "
                        f"{'x'.join(map(str, info.input_shape))}: use model.variant=cifar for 32x32 images")
    return AlexNet(imagenet, 4096 if imagenet else cfg.hidden, cfg.dropout, info.num_classes or 1000)
