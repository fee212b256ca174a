"""Typed config schemas and validation of a composed Hydra config.

Hydra composes YAML into a DictConfig; `validate()` checks every group against the
dataclass schema registered for the chosen model, dataset, optimizer, schedule and loop,
so that an unknown key or a wrong type fails before any work with a message naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from experiments.errors import UserError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")
TOP_LEVEL_KEYS = ("seed", "model", "data", "optim", "schedule", "trainer", "resume")


@dataclass
class OptimConfig:
    name: str = "adam"  # one of OPTIMIZERS
    lr: float = 1e-3
    momentum: float = 0.9  # sgd with momentum; ignored by adam/adamw
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0  # decoupled for adamw, L2 added to the gradient otherwise
    clip_norm: Optional[float] = None  # clip gradients to this global norm


@dataclass
class ScheduleConfig:
    name: str = "constant"  # one of SCHEDULES
    warmup_epochs: float = 0.0  # linear warmup from 0 (warmup_cosine)
    final_lr_frac: float = 0.0  # cosine decays to lr * final_lr_frac
    step_epochs: list[int] = field(default_factory=list)  # step: multiply lr by decay at these epochs
    decay: float = 0.1


def config_dir() -> Path:
    """The `conf/` tree: inside the package when installed from a wheel, else the repo's."""
    import experiments

    pkg = Path(experiments.__file__).resolve().parent
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if candidate.is_dir():
            return candidate
    raise UserError(f"nnrun's config directory was not found next to {pkg}; reinstall nnrun")


def experiment_names() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.yaml") if not p.stem.startswith("_"))


def _typed(group: str, schema: type, node: Any) -> Any:
    """Merge `node` onto `schema`, turning OmegaConf's errors into one-line UserErrors."""
    if not isinstance(node, DictConfig):
        raise UserError(f"config group '{group}' must be a mapping, got {node!r}")
    allowed = ", ".join(f.name for f in fields(schema))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        key = getattr(err, "key", None) or str(err).splitlines()[0]
        raise UserError(f"unknown config key '{group}.{key}'; allowed keys for {group}: {allowed}") from err
    except ValidationError as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", "?")
        msg = str(err).splitlines()[0]
        raise UserError(f"bad value for '{group}.{key}': {msg}") from err
    except OmegaConfBaseException as err:
        raise UserError(f"invalid config in '{group}': {str(err).splitlines()[0]}") from err


def _check_choice(key: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise UserError(f"bad value for '{key}': '{value}'; allowed values: {', '.join(allowed)}")


@dataclass
class Experiment:
    """A validated experiment: one typed object per config group."""

    seed: int
    model: Any
    data: Any
    trainer: Any
    optim: Optional[OptimConfig]
    schedule: Optional[ScheduleConfig]
    resume: Optional[str] = None
    raw: Optional[DictConfig] = None  # the resolved config as composed, for saving

    @property
    def family(self) -> str:
        from experiments.models import MODELS

        return MODELS.get(self.model.name).family


def validate(cfg: DictConfig) -> Experiment:
    """Check a composed config against the schemas; return the typed experiment."""
    from experiments.data import DATASETS
    from experiments.models import MODELS
    from experiments.training import LOOPS

    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise UserError(f"config interpolation failed: {str(err).splitlines()[0]}") from err
    unknown = [k for k in cfg.keys() if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise UserError(f"unknown config key '{unknown[0]}'; allowed top-level keys: {', '.join(TOP_LEVEL_KEYS)}")
    for required in ("model", "data", "trainer"):
        if cfg.get(required) is None:
            raise UserError(f"config has no '{required}' group; pick one with {required}=<name> (see `nnrun list`)")

    def entry(registry, group):
        name = cfg[group].get("name")
        if name is None:
            raise UserError(f"'{group}.name' is missing; pick one of: {', '.join(registry.names())}")
        return registry.get(str(name))

    model = _typed("model", entry(MODELS, "model").schema, cfg.model)
    data = _typed("data", entry(DATASETS, "data").schema, cfg.data)
    loop = entry(LOOPS, "trainer")
    trainer = _typed("trainer", loop.schema, cfg.trainer)
    family = MODELS.get(model.name).family
    if family != trainer.name:
        raise UserError(
            f"model '{model.name}' is trained by the '{family}' loop, not '{trainer.name}'; set trainer={family}"
        )
    optim = schedule = None
    if loop.uses_optimizer:
        optim = _typed("optim", OptimConfig, cfg.get("optim") or OmegaConf.create({}))
        schedule = _typed("schedule", ScheduleConfig, cfg.get("schedule") or OmegaConf.create({}))
        _check_choice("optim.name", optim.name, OPTIMIZERS)
        _check_choice("schedule.name", schedule.name, SCHEDULES)
        if optim.lr <= 0:
            raise UserError(f"bad value for 'optim.lr': {optim.lr}; it must be > 0")
    else:  # e.g. `optim.lr=0.1` on a Hopfield experiment: refuse rather than silently ignore it
        for group in ("optim", "schedule"):
            node = cfg.get(group)
            if node is not None:
                keys = list(node.keys()) if isinstance(node, DictConfig) else []
                key = f"{group}.{keys[0]}" if keys else group
                raise UserError(f"config key '{key}' does not apply: the '{trainer.name}' trainer uses no "
                                f"optimizer or schedule; drop the {group} override")
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int):
        raise UserError(f"bad value for 'seed': {seed!r}; it must be an integer")
    return Experiment(seed, model, data, trainer, optim, schedule, cfg.get("resume"), cfg)
