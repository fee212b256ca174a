"""Typed config schemas and validation of a composed Hydra config.

Hydra composes YAML into a DictConfig; `validate()` checks every group against the
dataclass schema registered for the chosen model, dataset, objective, optimizer, schedule
and trainer,
so that an unknown key or a wrong type fails before any work with a message naming it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from experiments.errors import UserError

BASE_KEYS = ("seed", "model", "data", "objective", "trainer", "resume", "plugins")


def config_dir() -> Path:
    """The `conf/` tree: inside the package when installed from a wheel, else the repo's."""
    import experiments

    pkg = Path(experiments.__file__).resolve().parent
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if candidate.is_dir():
            return candidate
    raise UserError(f"nnrun's config directory was not found next to {pkg}; reinstall nnrun")


def user_config_dirs() -> list[Path]:
    """The user's config trees, searched before nnrun's own: each directory in
    $NNRUN_CONFIG_DIR (os.pathsep-separated), then ./conf in the working directory.
    New experiments, models, datasets ... go there without editing the installed package."""
    candidates = [Path(p).expanduser() for p in os.environ.get("NNRUN_CONFIG_DIR", "").split(os.pathsep) if p]
    candidates.append(Path.cwd() / "conf")
    own, seen, dirs = config_dir(), set(), []
    for d in candidates:
        if d.is_dir() and d.resolve() != own and d.resolve() not in seen:
            seen.add(d.resolve())
            dirs.append(d.resolve())
    return dirs


def config_dirs() -> list[Path]:
    return [*user_config_dirs(), config_dir()]


def experiment_names() -> list[str]:
    return sorted({p.stem for d in config_dirs() for p in d.glob("*.yaml") if not p.stem.startswith("_")})


def experiment_file(name: str) -> Path:
    return next(d / f"{name}.yaml" for d in config_dirs() if (d / f"{name}.yaml").is_file())


def _typed(group: str, schema: type, node: Any) -> Any:
    """Merge `node` onto `schema`, turning OmegaConf's errors into one-line UserErrors."""
    if not isinstance(node, DictConfig):
        raise UserError(f"config group '{group}' must be a mapping, got {node!r}")
    allowed = ", ".join(f.name for f in fields(schema))
    # a `+key=value` addition rides along in Hydra's typed node; the schema decides
    unknown = [k for k in node.keys() if k not in {f.name for f in fields(schema)}]
    if unknown:
        raise UserError(f"unknown config key '{group}.{unknown[0]}'; allowed keys for {group}: {allowed}")
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


def _load_plugins(value: Any) -> None:
    from experiments.registry import load_plugins

    if value is None:
        specs = []
    elif isinstance(value, str):
        specs = [value]
    else:
        specs = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else None
    if specs is None or not all(isinstance(s, str) for s in specs):
        raise UserError(f"bad value for 'plugins': {value!r}; it is a list of Python files or module names, "
                        "e.g. plugins=[my_models.py]")
    load_plugins(specs)


@dataclass
class Experiment:
    """A validated experiment: one typed object per config group."""

    seed: int
    model: Any
    data: Any
    trainer: Any
    optim: Optional[Any] = None  # the first optimizer group (`optim`), None for trainers without one
    schedule: Optional[Any] = None
    objective: Optional[Any] = None  # None for trainers that follow no loss (Hebbian)
    resume: Optional[str] = None
    raw: Optional[DictConfig] = None  # the resolved config as composed, for saving
    optims: dict = field(default_factory=dict)  # every optimizer group by name (two for adversarial trainers)


def validate(cfg: DictConfig) -> Experiment:
    """Check a composed config against the schemas; return the typed experiment."""
    from experiments.data import DATASETS
    from experiments.data.augment import check_augment
    from experiments.models import MODELS
    from experiments.objectives import OBJECTIVES
    from experiments.optim import OPTIMIZERS, SCHEDULES
    from experiments.training import TRAINERS
    from experiments.writers import check_writers

    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise UserError(f"config interpolation failed: {str(err).splitlines()[0]}") from err
    _load_plugins(cfg.get("plugins"))  # a run's saved config names the modules that registered its model
    for required in ("model", "data", "trainer"):
        if cfg.get(required) is None:
            raise UserError(f"config has no '{required}' group; pick one with {required}=<name> (see `nnrun list`)")

    def entry(registry, group, node=None):
        node = cfg[group] if node is None else node
        name = node.get("name") if isinstance(node, DictConfig) else None
        if name is None:
            raise UserError(f"'{group}.name' is missing; pick one of: {', '.join(registry.names())}")
        if registry.canonical(str(name)) not in registry.names():
            raise UserError(f"bad value for '{group}.name': unknown {registry.kind} '{name}'; "
                            f"known {registry.kind}s: {', '.join(registry.names())}")
        return registry.get(str(name))

    trainer_entry = entry(TRAINERS, "trainer")
    allowed_top = (*BASE_KEYS, *trainer_entry.optim_groups, *(("schedule",) if trainer_entry.uses_optimizer else ()))
    unknown = [k for k in cfg.keys() if k not in (*BASE_KEYS, "optim", "schedule") and k not in allowed_top]
    if unknown:
        raise UserError(f"unknown config key '{unknown[0]}'; allowed top-level keys: {', '.join(allowed_top)}")
    model = _typed("model", entry(MODELS, "model").schema, cfg.model)
    data = _typed("data", entry(DATASETS, "data").schema, cfg.data)
    trainer = _typed("trainer", trainer_entry.schema, cfg.trainer)
    trainer.name = TRAINERS.canonical(trainer.name)
    wanted = MODELS.get(model.name).trainer
    if wanted != trainer.name:
        raise UserError(f"model '{model.name}' is trained by the '{wanted}' trainer, not '{trainer.name}'; "
                        f"set trainer={wanted}")
    check_augment(list(data.augment))
    check_writers(list(getattr(trainer, "writers", [])))
    optims: dict[str, Any] = {}
    schedule = objective = None
    for group in trainer_entry.optim_groups:  # two for an adversarial trainer, none for Hebbian storage
        node = cfg.get(group) or OmegaConf.create({"name": "adam"})
        optims[group] = _typed(group, entry(OPTIMIZERS, group, node).schema, node)
    if trainer_entry.uses_optimizer:
        node = cfg.get("schedule") or OmegaConf.create({"name": "constant"})
        schedule = _typed("schedule", entry(SCHEDULES, "schedule", node).schema, node)
    if trainer_entry.steps is not None:  # the driver reports the objective's metrics
        # configs saved before objectives were chosen in config were all classifiers
        node = cfg.get("objective") or OmegaConf.create({"name": "classification"})
        objective = _typed("objective", entry(OBJECTIVES, "objective", node).schema, node)
    # e.g. `optim.lr=0.1` on a Hopfield experiment: refuse rather than silently ignore it
    used = {*optims, *(("schedule",) if schedule is not None else ()), *(("objective",) if objective else ())}
    for group in ("optim", "schedule", "objective"):
        node = cfg.get(group)
        if node is not None and group not in used:
            keys = list(node.keys()) if isinstance(node, DictConfig) else []
            key = f"{group}.{keys[0]}" if keys else group
            raise UserError(f"config key '{key}' does not apply: the '{trainer.name}' trainer uses no "
                            f"{'objective' if group == 'objective' else 'optimizer or schedule'}; "
                            f"drop the {group} override")
    if getattr(trainer, "best_metric", None) and objective is not None:
        from experiments.objectives import build_objective

        build_objective(objective).metric(trainer.best_metric)  # fails with the declared metrics
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int):
        raise UserError(f"bad value for 'seed': {seed!r}; it must be an integer")
    return Experiment(seed, model, data, trainer, optims.get("optim"), schedule, objective, cfg.get("resume"), cfg,
                      optims)
