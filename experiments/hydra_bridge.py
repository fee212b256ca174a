"""Hydra underneath the Typer commands.

`compose()` uses Hydra's compose API to check a config before anything runs (clean
one-line errors, `--cfg`, the run directory known in advance). `launch()` then runs the
task through Hydra's real entry point (`hydra.main`), so that Hydra's output
directories, logging, sweepers and launcher plugins all keep working.
"""
from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from experiments.config import config_dir, experiment_names
from experiments.errors import UserError

_RUN_ID = secrets.token_hex(3)  # one per process: the same id wherever hydra.run.dir is resolved


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("nnrun_id"):
        OmegaConf.register_new_resolver("nnrun_id", lambda: _RUN_ID)


def check_experiment(conf: Optional[str]) -> str:
    names = experiment_names()
    if not conf:
        raise UserError(f"no experiment given; pass conf=<name>, one of: {', '.join(names)}")
    if conf not in names:
        raise UserError(f"unknown experiment '{conf}'; known experiments: {', '.join(names)} (see `nnrun list`)")
    return conf


def compose(conf: str, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The composed config including the `hydra` node, and the overrides as Hydra
    accepted them (schema keys missing from the YAML turned into `+key=value`);
    or a UserError naming the problem."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    check_experiment(conf)
    overrides = list(overrides)
    for _ in range(len(overrides) + 1):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="nnrun"):
                return hydra_compose(config_name=conf, overrides=overrides, return_hydra_config=True), overrides
        except (HydraException, OmegaConfBaseException, ValueError) as err:
            retried = _as_schema_addition(err, overrides)
            if retried is None:
                raise UserError(_override_error(err, overrides)) from err
            overrides = retried
        finally:
            GlobalHydra.instance().clear()
    raise AssertionError("unreachable")


def _as_schema_addition(err: Exception, overrides: list[str]) -> Optional[list[str]]:
    """A key that the YAML leaves out but the schema defines (e.g. data.train_subset) is
    a legal override: retry it as Hydra's `+key=value`. The schema check comes later."""
    m = re.search(r"Could not override '([^']+)'", " ".join(str(err).split()))
    if not m or "." not in m.group(1):
        return None
    group, field = m.group(1).split(".", 1)
    if "." in field or field not in _schema_fields(group):
        return None
    return [f"+{o}" if o.split("=", 1)[0] == m.group(1) else o for o in overrides]


def _schema_fields(group: str) -> set[str]:
    from dataclasses import fields

    from experiments.config import OptimConfig, ScheduleConfig

    registries = _registries()
    if group in registries:
        return {f.name for _, entry in registries[group].items() for f in fields(entry.schema)}
    schema = {"optim": OptimConfig, "schedule": ScheduleConfig}.get(group)
    return {f.name for f in fields(schema)} if schema else set()


def _registries() -> dict:
    from experiments.data import DATASETS
    from experiments.models import MODELS
    from experiments.training import LOOPS

    return {"model": MODELS, "data": DATASETS, "trainer": LOOPS}


def _override_error(err: Exception, overrides: list[str]) -> str:
    text = " ".join(str(err).split())
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        group = key.split(".")[0]
        allowed = sorted(_schema_fields(group)) if "." in key else []
        hint = f"allowed keys for {group}: {', '.join(allowed)}" if allowed else \
            "`nnrun train conf=<name> --cfg` prints every key"
        return f"unknown config key '{key}' in override '{_find(overrides, key)}'; {hint}"
    m = re.search(r"Could not find '([^']+)'", text) or re.search(r"In '[^']+': Could not load '([^']+)'", text)
    if m:
        group = m.group(1).split("/")[0]
        options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml")) if (config_dir() / group).is_dir() else []
        hint = f"; available: {', '.join(options)}" if options else ""
        return f"unknown config choice '{m.group(1)}'{hint}"
    return f"bad override: {text[:300]}"


def _find(overrides: list[str], key: str) -> str:
    return next((o for o in overrides if o.lstrip("+~").split("=")[0] == key), key)


def task_config(cfg: DictConfig) -> DictConfig:
    """The job's own config, without Hydra's node."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])


def resolved_run_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.hydra.run.dir)).resolve()


def quote(value: str) -> str:
    """Quote a value for Hydra's override grammar (paths may contain spaces or '=')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def launch(conf: str, overrides: list[str], task: Callable[[DictConfig], Any], multirun: bool = False) -> None:
    """Run `task(cfg)` through `hydra.main`, as if `overrides` were its command line."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    _register_resolvers()
    GlobalHydra.instance().clear()
    entry = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=conf)(task)
    argv = sys.argv
    sys.argv = [argv[0], *(["--multirun"] if multirun else []), *overrides]
    try:
        entry()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
