"""Optimizers and learning-rate schedules: two registries of optax builders.

Adding one = a function registered here (or in any module of this package, or a user's
plugin) plus one YAML in conf/optim/ or conf/schedule/. Every optimizer config shares
`lr`, `weight_decay` and `clip_norm`; the chain is [clip] -> [L2 decay] -> optimizer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import optax

from experiments.registry import Registry


@dataclass
class OptimConfig:
    """Fields every optimizer config has; optimizers extend this dataclass."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0  # L2 added to the gradient (decoupled for adamw)
    clip_norm: Optional[float] = None  # clip gradients to this global norm

    def __post_init__(self) -> None:
        from experiments.errors import UserError

        if self.lr <= 0:
            raise UserError(f"bad value for 'optim.lr': {self.lr}; it must be > 0")


@dataclass
class ScheduleConfig:
    """Fields every schedule config has; schedules extend this dataclass."""

    name: str = "constant"


@dataclass(frozen=True)
class OptimizerEntry:
    schema: type
    build: Callable[[Any, optax.ScalarOrSchedule], optax.GradientTransformation]  # (cfg with values, lr) -> tx
    decoupled_decay: bool  # the optimizer applies weight_decay itself
    description: str


@dataclass(frozen=True)
class ScheduleEntry:
    schema: type
    build: Callable[[Any, float, int, int], optax.Schedule]  # (cfg, lr, steps_per_epoch, epochs) -> schedule
    description: str


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer", __name__)
SCHEDULES: Registry[ScheduleEntry] = Registry("schedule", __name__)


def register_optimizer(name: str, schema: type = OptimConfig, decoupled_decay: bool = False, description: str = ""):
    def decorator(build):
        OPTIMIZERS.register(name)(OptimizerEntry(schema, build, decoupled_decay, description or (build.__doc__ or "").strip()))
        return build

    return decorator


def register_schedule(name: str, schema: type = ScheduleConfig, description: str = ""):
    def decorator(build):
        SCHEDULES.register(name)(ScheduleEntry(schema, build, description or (build.__doc__ or "").strip()))
        return build

    return decorator


def make_schedule(cfg: Any, lr: float, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    return SCHEDULES.get(cfg.name).build(cfg, lr, steps_per_epoch, epochs)


def make_optimizer(optim: Any, schedule: Any, steps_per_epoch: int, epochs: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain with the configured schedule, and that schedule (for logging)."""
    lr = make_schedule(schedule, optim.lr, steps_per_epoch, epochs)
    return make_transform(optim, lr), lr


def traced_fields(optim: Any) -> tuple[str, ...]:
    """Numeric fields that may take a traced per-trial value in a vmapped sweep: the
    floats an optimizer reads in its update (lr has its own per-step table; fields read
    only at initialisation, listed in the schema's `init_fields`, must be equal)."""
    fixed = {"lr", *getattr(type(optim), "init_fields", ())}
    return tuple(f.name for f in dataclasses.fields(optim) if f.name not in fixed
                 and (isinstance(getattr(optim, f.name), float) or f.name == "clip_norm"))


STRUCTURAL_FIELDS = ("weight_decay", "clip_norm")  # their zero-ness adds or removes a transform


def make_transform(optim: Any, lr: optax.ScalarOrSchedule, values: Optional[Mapping[str, Any]] = None
                   ) -> optax.GradientTransformation:
    """The optax chain: [clip] -> [L2 decay] -> optimizer with learning rate `lr`.

    `values` replaces numeric fields of `optim` by arrays, traced ones included: the
    vectorised sweep builds one chain per trial inside a vmapped step this way. Which
    transforms the chain holds is still decided by `optim` alone, so the optimizer state
    has the same structure with or without `values`.
    """
    entry = OPTIMIZERS.get(optim.name)
    hp = dataclasses.replace(optim, **values) if values else optim
    parts: list[optax.GradientTransformation] = []
    if optim.clip_norm:
        parts.append(optax.clip_by_global_norm(hp.clip_norm))
    if optim.weight_decay and not entry.decoupled_decay:
        parts.append(optax.add_decayed_weights(hp.weight_decay))  # coupled L2, as in classic SGD
    parts.append(entry.build(hp, lr))
    return optax.chain(*parts)
