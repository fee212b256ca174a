"""The learning-rate schedules nnrun ships (optax), in epochs so they follow the data size."""
from __future__ import annotations

from dataclasses import dataclass, field

import optax

from experiments.optim import ScheduleConfig, register_schedule


@register_schedule("constant", description="the same learning rate throughout")
def constant(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int):
    return optax.constant_schedule(lr)


@dataclass
class CosineConfig(ScheduleConfig):
    name: str = "cosine"
    final_lr_frac: float = 0.0  # decays to lr * final_lr_frac


@register_schedule("cosine", schema=CosineConfig, description="cosine decay over the whole run")
def cosine(cfg: CosineConfig, lr: float, steps_per_epoch: int, epochs: int):
    return optax.cosine_decay_schedule(lr, decay_steps=max(1, steps_per_epoch * epochs), alpha=cfg.final_lr_frac)


@dataclass
class WarmupCosineConfig(ScheduleConfig):
    name: str = "warmup_cosine"
    warmup_epochs: float = 0.5  # linear warmup from 0
    final_lr_frac: float = 0.01


@register_schedule("warmup_cosine", schema=WarmupCosineConfig, description="linear warmup, then cosine decay")
def warmup_cosine(cfg: WarmupCosineConfig, lr: float, steps_per_epoch: int, epochs: int):
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=total,
                                              end_value=lr * cfg.final_lr_frac)


@dataclass
class StepConfig(ScheduleConfig):
    name: str = "step"
    step_epochs: list[int] = field(default_factory=lambda: [5, 8])  # multiply lr by decay at these epochs
    decay: float = 0.1


@register_schedule("step", schema=StepConfig, description="multiply the rate by `decay` at given epochs")
def step(cfg: StepConfig, lr: float, steps_per_epoch: int, epochs: int):
    return optax.piecewise_constant_schedule(lr, {int(e * steps_per_epoch): cfg.decay for e in cfg.step_epochs})
