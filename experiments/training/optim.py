"""Optimizers and learning-rate schedules from config, all optax."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import optax

from experiments.config import OptimConfig, ScheduleConfig


def make_schedule(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    total = max(1, steps_per_epoch * epochs)
    if cfg.name == "constant":
        return optax.constant_schedule(lr)
    if cfg.name == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=total, alpha=cfg.final_lr_frac)
    if cfg.name == "warmup_cosine":
        warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=warmup, decay_steps=total, end_value=lr * cfg.final_lr_frac
        )
    if cfg.name == "step":
        boundaries = {int(e * steps_per_epoch): cfg.decay for e in cfg.step_epochs}
        return optax.piecewise_constant_schedule(lr, boundaries)
    raise ValueError(f"unknown schedule {cfg.name}")  # validate() rejects this earlier


def make_optimizer(
    optim: OptimConfig, schedule: ScheduleConfig, steps_per_epoch: int, epochs: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain with the configured schedule, and that schedule (for logging)."""
    lr = make_schedule(schedule, optim.lr, steps_per_epoch, epochs)
    return make_transform(optim, lr), lr


def make_transform(
    optim: OptimConfig, lr: optax.ScalarOrSchedule, values: Optional[Mapping[str, Any]] = None
) -> optax.GradientTransformation:
    """The optax chain: [clip] -> [L2 decay] -> optimizer with learning rate `lr`.

    `values` replaces numeric fields of `optim` (momentum, b1, b2, eps, weight_decay,
    clip_norm) by arrays, traced ones included: the vectorised sweep builds one chain per
    trial inside a vmapped step this way (experiments/sweep/vectorized.py). Which
    transforms the chain holds is still decided by `optim` alone, so the optimizer state
    has the same structure with or without `values`.
    """
    hp = dataclasses.replace(optim, **values) if values else optim
    parts: list[optax.GradientTransformation] = []
    if optim.clip_norm:
        parts.append(optax.clip_by_global_norm(hp.clip_norm))
    if optim.weight_decay and optim.name != "adamw":
        parts.append(optax.add_decayed_weights(hp.weight_decay))  # coupled L2, as in classic SGD
    if optim.name == "sgd":
        parts.append(optax.sgd(lr))
    elif optim.name == "momentum":
        parts.append(optax.sgd(lr, momentum=hp.momentum, nesterov=optim.nesterov))
    elif optim.name == "adam":
        parts.append(optax.adam(lr, b1=hp.b1, b2=hp.b2, eps=hp.eps))
    elif optim.name == "adamw":
        parts.append(optax.adamw(lr, b1=hp.b1, b2=hp.b2, eps=hp.eps, weight_decay=hp.weight_decay))
    else:
        raise ValueError(f"unknown optimizer {optim.name}")
    return optax.chain(*parts)
