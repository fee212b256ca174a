"""The optimizers nnrun ships, each an optax transform with its own config fields."""
from __future__ import annotations

from dataclasses import dataclass

import optax

from experiments.optim import OptimConfig, register_optimizer


@register_optimizer("sgd", description="plain stochastic gradient descent")
def sgd(cfg: OptimConfig, lr):
    return optax.sgd(lr)


@dataclass
class MomentumConfig(OptimConfig):
    name: str = "momentum"
    momentum: float = 0.9
    nesterov: bool = False


@register_optimizer("momentum", schema=MomentumConfig, description="SGD with (Nesterov) momentum")
def momentum(cfg: MomentumConfig, lr):
    return optax.sgd(lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


@dataclass
class AdamConfig(OptimConfig):
    name: str = "adam"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


@register_optimizer("adam", schema=AdamConfig, description="Adam (Kingma & Ba 2015)")
def adam(cfg: AdamConfig, lr):
    return optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"


@register_optimizer("adamw", schema=AdamWConfig, decoupled_decay=True,
                    description="Adam with decoupled weight decay (Loshchilov & Hutter 2019)")
def adamw(cfg: AdamWConfig, lr):
    return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)


@dataclass
class RMSPropConfig(OptimConfig):
    name: str = "rmsprop"
    decay: float = 0.9
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False


@register_optimizer("rmsprop", schema=RMSPropConfig, description="RMSProp (Hinton's lecture 6e): scale by a running RMS")
def rmsprop(cfg: RMSPropConfig, lr):
    return optax.rmsprop(lr, decay=cfg.decay, eps=cfg.eps, momentum=cfg.momentum or None, centered=cfg.centered)


@dataclass
class AdagradConfig(OptimConfig):
    name: str = "adagrad"
    initial_accumulator_value: float = 0.1
    eps: float = 1e-7
    init_fields = ("initial_accumulator_value",)  # read by init: equal across a vectorised group


@register_optimizer("adagrad", schema=AdagradConfig, description="Adagrad (Duchi et al. 2011): per-weight rates")
def adagrad(cfg: AdagradConfig, lr):
    return optax.adagrad(lr, initial_accumulator_value=cfg.initial_accumulator_value, eps=cfg.eps)
