"""A DCGAN-style generator and discriminator (Radford et al. 2015), sized for 28x28 digits.

Generator: z -> dense to (H/4, W/4, 2w) -> [norm, ReLU] -> x2 upsampling to (H/2, W/2, w)
-> [norm, ReLU] -> x2 upsampling to (H, W, C) -> tanh, so samples lie in [-1, 1]; each
upsampling is a sub-pixel convolution (3x3 conv to 4x the channels, depth-to-space) in
place of DCGAN's 4x4 stride-2 transposed convolution. Discriminator: conv 4x4/2 (w) ->
LeakyReLU(0.2) -> conv 4x4/2 (2w) -> LeakyReLU(0.2) -> dense to one logit. Convolutions
run as patch matmuls on batch-minor activations (patch_conv.py, as LeNet5 does): on
XLA-CPU the library convolutions of these shapes were the whole step's cost.

The generator normalises with the statistics of the batch it draws (batch norm without
running averages): samples then depend only on parameters and latents, and the state
has no mutable collections to checkpoint or vmap.

Both players live in one Flax module so that `nnrun show`, initialisation and the
vectorised-sweep checks see one model; the adversarial trainer (training/adversarial.py)
keeps their parameter sets apart (`generator`, `discriminator`) and gives each its own
optimizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from flax import linen as nn

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import ConvAct
from experiments.models.patch_conv import CHWN, from_layout, to_layout


@dataclass
class DCGANConfig(ModelConfig):
    name: str = "dcgan"
    latent: int = 64  # size of z ~ N(0, I)
    g_width: int = 32  # channels of the generator's last hidden layer (the first has twice as many)
    d_width: int = 32  # channels of the discriminator's first layer (the second has twice as many)

    def __post_init__(self) -> None:
        for key in ("latent", "g_width", "d_width"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'model.{key}': {getattr(self, key)}; it must be >= 1")


class BatchStatNorm(nn.Module):
    """Batch normalisation by the current batch's statistics only (no running averages),
    per channel of CHWN activations (channels first)."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        axes = tuple(range(1, x.ndim))
        mean = jnp.mean(x, axes, keepdims=True)
        var = jnp.var(x, axes, keepdims=True)
        scale = self.param("scale", nn.initializers.ones, (x.shape[0],)).reshape((-1,) + (1,) * (x.ndim - 1))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[0],)).reshape((-1,) + (1,) * (x.ndim - 1))
        return (x - mean) * (scale / jnp.sqrt(var + self.eps)) + bias


def depth_to_space(x: jnp.ndarray) -> jnp.ndarray:
    """(4C, H, W, N) -> (C, 2H, 2W, N): each position's 4 channel groups become a 2x2 block."""
    c4, h, w, n = x.shape
    x = x.reshape(2, 2, c4 // 4, h, w, n).transpose(2, 3, 0, 4, 1, 5)
    return x.reshape(c4 // 4, 2 * h, 2 * w, n)


class Upsample(nn.Module):
    """x2 upsampling by a learned sub-pixel convolution (Shi et al. 2016): a 3x3 conv to 4x
    the channels, then depth-to-space. It spans what a 4x4 stride-2 transposed conv does,
    as one patch matmul (XLA-CPU's transposed convolutions ran ~50x slower here)."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return depth_to_space(ConvAct(4 * self.features, (3, 3), padding="SAME", layout=CHWN, name="conv")(x))


class Generator(nn.Module):
    image_shape: tuple[int, int, int]
    width: int = 32

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        h, w, c = self.image_shape
        x = nn.Dense((h // 4) * (w // 4) * 2 * self.width, name="Project")(z)
        x = to_layout(x.reshape(z.shape[0], h // 4, w // 4, 2 * self.width), CHWN)
        x = nn.relu(BatchStatNorm(name="Norm0")(x))
        x = nn.relu(BatchStatNorm(name="Norm1")(Upsample(self.width, name="Up1")(x)))
        return from_layout(jnp.tanh(Upsample(c, name="Up2")(x)), CHWN)


class Discriminator(nn.Module):
    width: int = 32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = to_layout(x, CHWN)
        x = nn.leaky_relu(ConvAct(self.width, (4, 4), 2, "SAME", layout=CHWN, name="Conv1")(x), 0.2)
        x = nn.leaky_relu(ConvAct(2 * self.width, (4, 4), 2, "SAME", layout=CHWN, name="Conv2")(x), 0.2)
        x = from_layout(x, CHWN)
        return nn.Dense(1, name="Logit")(x.reshape(x.shape[0], -1))[:, 0]


class DCGAN(nn.Module):
    """Both players. `__call__(x)` is the discriminator's logit for images in [-1, 1] (and
    initialises the generator too); `generate(z)` draws images from latents."""

    image_shape: tuple[int, int, int]
    latent: int = 64
    g_width: int = 32
    d_width: int = 32

    def setup(self) -> None:
        self.generator = Generator(self.image_shape, self.g_width)
        self.discriminator = Discriminator(self.d_width)

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        fake = self.generator(jnp.zeros((x.shape[0], self.latent), x.dtype))
        return self.discriminator(jnp.concatenate([x, fake]))[: x.shape[0]]

    def generate(self, z: jnp.ndarray) -> jnp.ndarray:
        return self.generator(z)

    def discriminate(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.discriminator(x)


@register_model("dcgan", schema=DCGANConfig, trainer="adversarial",
                description="DCGAN-style generator and discriminator (transposed convs / strided convs), for images",
                input_shape="(N, H, W, C) images with H and W divisible by 4, e.g. (N, 28, 28, 1)")
def build(cfg: DCGANConfig, info: DataInfo) -> DCGAN:
    if len(info.input_shape) != 3 or info.input_shape[0] % 4 or info.input_shape[1] % 4:
        raise UserError(f"model 'dcgan' needs (N, H, W, C) images with H and W divisible by 4; the data gives "
                        f"(N, {', '.join(map(str, info.input_shape))}); pick image data (data=mnist)")
    return DCGAN(tuple(info.input_shape), cfg.latent, cfg.g_width, cfg.d_width)
