"""Autoencoders: an encoder narrowing to a code, a decoder back to the input size.

- `kind: dense`: layers `hidden` down to `code`, mirrored back up (ReLU by default).
- `kind: conv`: strided 4x4 convolutions (`channels`, each halving height and width), a
  dense code, and a decoder of x2 sub-pixel upsamplings mirrored back to the image
  (convolutions as patch matmuls, as in LeNet5 and the DCGAN; patch_conv.py).
- `noise` (denoising): training inputs are corrupted before encoding, the target stays the
  clean input; `gaussian` (std = noise_level), `masking` (each pixel zeroed with
  probability noise_level), `salt_pepper` (each pixel set to 0 or 1 with probability
  noise_level), `half` (a random half of the image -- top, bottom, left or right -- replaced
  by uniform noise in [0, 1] with probability noise_level per pixel). Evaluation is on
  clean inputs; `corrupt` serves the measured denoising check (generative_figures.py).
- `variational`: the encoder gives a mean and a log-variance, the code is sampled by the
  reparameterisation z = mu + sigma * eps in training (the mean in evaluation), and the
  outputs carry the per-example KL(q(z|x) || N(0, I)), weighted by `objective.kl_weight`.

Outputs are flat (batch, input size): reconstructions for an MSE objective, logits of
pixel intensities for binary cross-entropy (objective=reconstruction).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.dcgan import Upsample
from experiments.models.layers import ConvAct, DenseAct
from experiments.models.patch_conv import CHWN, from_layout, to_layout

KINDS = ("dense", "conv")
NOISES = ("none", "gaussian", "masking", "salt_pepper", "half")


@dataclass
class AutoencoderConfig(ModelConfig):
    name: str = "autoencoder"
    kind: str = "dense"  # dense | conv
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # dense: encoder layers; the decoder mirrors them
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv: encoder channels, each conv halves H and W
    code: int = 32  # size of the bottleneck
    activation: str = "relu"
    variational: bool = False  # a VAE: sampled code, KL term in the outputs
    noise: str = "none"  # denoising: none | gaussian | masking | salt_pepper | half
    noise_level: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"bad value for 'model.kind': '{self.kind}'; allowed values: {', '.join(KINDS)}")
        if self.noise not in NOISES:
            raise UserError(f"bad value for 'model.noise': '{self.noise}'; allowed values: {', '.join(NOISES)}")
        if self.code < 1:
            raise UserError(f"bad value for 'model.code': {self.code}; it must be >= 1")
        if not 0 <= self.noise_level <= (10 if self.noise == "gaussian" else 1):
            raise UserError(f"bad value for 'model.noise_level': {self.noise_level}; a probability in [0, 1] "
                            "(a standard deviation for gaussian noise)")


class VAEOutput(struct.PyTreeNode):
    """A VAE's outputs: the reconstruction (what `shape` reports) and each example's KL term."""

    recon: Any
    kl: Any

    @property
    def shape(self) -> tuple:
        return self.recon.shape


def corrupt(x: jnp.ndarray, key: jax.Array, noise: str, level: float) -> jnp.ndarray:
    """`x` (batch first, pixels in [0, 1]) with the configured noise."""
    if noise == "none":
        return x
    k1, k2 = jax.random.split(key)
    hit = jax.random.bernoulli(k1, level, x.shape)
    if noise == "gaussian":
        return x + level * jax.random.normal(k1, x.shape, x.dtype)
    if noise == "masking":
        return jnp.where(hit, 0.0, x)
    if noise == "salt_pepper":
        return jnp.where(hit, jax.random.bernoulli(k2, 0.5, x.shape).astype(x.dtype), x)
    # half: a random half of each image (top, bottom, left or right) gets uniform noise
    b, h, w = x.shape[0], x.shape[1], x.shape[2]
    side = jax.random.randint(k2, (b,), 0, 4).reshape((b,) + (1,) * (x.ndim - 1))
    rows = jnp.arange(h).reshape((1, h) + (1,) * (x.ndim - 2))
    cols = jnp.arange(w).reshape((1, 1, w) + (1,) * (x.ndim - 3))
    region = jnp.select([side == 0, side == 1, side == 2],
                        [rows < h // 2, rows >= h // 2, cols < w // 2], cols >= w // 2)
    uniform = jax.random.uniform(jax.random.fold_in(k2, 1), x.shape, x.dtype)
    return jnp.where(region & hit, uniform, x)


class Autoencoder(nn.Module):
    input_shape: tuple[int, ...]
    kind: str = "dense"
    hidden: tuple[int, ...] = (256, 128)
    channels: tuple[int, ...] = (32, 64)
    code: int = 32
    activation: str = "relu"
    variational: bool = False
    noise: str = "none"
    noise_level: float = 0.5

    @property
    def outputs(self) -> int:
        size = 1
        for d in self.input_shape:
            size *= d
        return size

    def setup(self) -> None:
        act = self.activation
        if self.kind == "dense":
            self.enc = [DenseAct(u, activation=act, name=f"E{i + 1}") for i, u in enumerate(self.hidden)]
            self.dec = [DenseAct(u, activation=act, name=f"D{i + 1}") for i, u in enumerate(reversed(self.hidden))]
            self.out = DenseAct(self.outputs, name="Out")
        else:
            self.enc = [ConvAct(c, (4, 4), 2, "SAME", activation=act, layout=CHWN, name=f"E{i + 1}")
                        for i, c in enumerate(self.channels)]
            h, w = self.input_shape[0], self.input_shape[1]
            f = 2 ** len(self.channels)
            self.grid = (h // f, w // f, self.channels[-1])
            self.project = DenseAct(self.grid[0] * self.grid[1] * self.grid[2], activation=act, name="Project")
            ups = [*reversed(self.channels[:-1]), self.input_shape[2]]
            self.dec = [Upsample(c, name=f"D{i + 1}") for i, c in enumerate(ups)]
        self.code_mean = DenseAct(self.code, name="Code")
        if self.variational:
            self.code_logvar = DenseAct(self.code, name="CodeLogVar")

    def _features(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.kind == "dense":
            x = x.reshape(x.shape[0], -1)
            for layer in self.enc:
                x = layer(x)
            return x
        x = to_layout(x.reshape((x.shape[0], *self.input_shape)), CHWN)
        for layer in self.enc:
            x = layer(x)
        return from_layout(x, CHWN).reshape(x.shape[-1], -1)  # CHWN's last axis is the batch

    def encode(self, x: jnp.ndarray) -> jnp.ndarray:
        """The code of `x`: the mean of q(z|x) for a VAE."""
        return self.code_mean(self._features(x))

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        if self.kind == "dense":
            for layer in self.dec:
                z = layer(z)
            return self.out(z)
        x = to_layout(self.project(z).reshape(z.shape[0], *self.grid), CHWN)
        for i, layer in enumerate(self.dec):
            x = layer(x)
            if i < len(self.dec) - 1:
                x = nn.relu(x)
        return from_layout(x, CHWN).reshape(z.shape[0], -1)

    def __call__(self, x: jnp.ndarray, train: bool = False) -> Any:
        if train and self.noise != "none":
            x = corrupt(x, self.make_rng("noise"), self.noise, self.noise_level)
        h = self._features(x)
        mean = self.code_mean(h)
        if not self.variational:
            return self.decode(mean)
        logvar = self.code_logvar(h)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("latent"), mean.shape) if train else mean
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean ** 2 - 1.0 - logvar, axis=-1)
        return VAEOutput(self.decode(z), kl)


@register_model("autoencoder", schema=AutoencoderConfig,
                description="autoencoder, dense or convolutional; denoising and variational options",
                input_shape="dense: any; conv: (N, H, W, C) images with H, W divisible by 2**len(model.channels)")
def build(cfg: AutoencoderConfig, info: DataInfo) -> Autoencoder:
    if cfg.kind == "conv":
        f = 2 ** len(cfg.channels)
        if len(info.input_shape) != 3 or info.input_shape[0] % f or info.input_shape[1] % f:
            raise UserError(f"model.kind=conv needs (N, H, W, C) images with H and W divisible by {f} "
                            f"(2**len(model.channels)); the data gives (N, {', '.join(map(str, info.input_shape))})")
    return Autoencoder(tuple(info.input_shape), cfg.kind, tuple(cfg.hidden), tuple(cfg.channels), cfg.code,
                       cfg.activation, cfg.variational, cfg.noise, cfg.noise_level)
