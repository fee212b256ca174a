"""Hydra underneath the Typer commands.

`compose()` uses Hydra's compose API to check a config before anything runs (clean
one-line errors, `--cfg`, the run directory known in advance). `launch()` then runs the
task through Hydra's real entry point (`hydra.main`), so that Hydra's output
directories, logging, sweepers and launcher plugins all keep working.
"""
from __future__ import annotations

import difflib
import re
import secrets
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from experiments.config import config_dirs, experiment_names
from experiments.errors import UserError

_RUN_ID = secrets.token_hex(3)  # one per process: the same id wherever hydra.run.dir is resolved


GROUPS = ("model", "data", "objective", "optim", "schedule", "trainer")


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("nnrun_id"):
        OmegaConf.register_new_resolver("nnrun_id", lambda: _RUN_ID)
    if not OmegaConf.has_resolver("nnrun_choices"):
        OmegaConf.register_new_resolver("nnrun_choices", choices_suffix)


def choices_suffix(overrides: Any = None) -> str:
    """The group choices given on the command line, for a run directory's name:
    `-model=mlp,data=fashion_mnist` (empty when none), so that runs of one experiment with
    another model or dataset can be told apart in outputs/<experiment>/."""
    chosen = []
    for o in list(overrides or []):
        key, sep, value = str(o).lstrip("+").partition("=")
        if sep and key in GROUPS and value:
            chosen.append(f"{key}={re.sub(r'[^A-Za-z0-9_.-]', '_', value)[:40]}")
    return "-" + ",".join(chosen) if chosen else ""


def check_experiment(conf: Optional[str]) -> str:
    names = experiment_names()
    if not conf:
        raise UserError(f"no experiment given; pass conf=<name>, one of: {', '.join(names)}")
    if conf not in names:
        raise UserError(f"unknown experiment '{conf}'; known experiments: {', '.join(names)} (see `nnrun list`)")
    return conf


def register_schemas() -> None:
    """Every registered schema into Hydra's ConfigStore as `schema/<group>/<name>`.

    Each group YAML starts with `defaults: [/schema/<group>/<name>@_here_, _self_]`, so the
    composed node holds every schema key with its one default (the dataclass), a key the
    YAML leaves out is still a legal override, and an unknown key or a wrong type fails
    inside Hydra, before anything runs."""
    from hydra.core.config_store import ConfigStore

    global _STORED
    store = ConfigStore.instance()
    wanted = tuple((group, name, entry.schema) for group, registry in _registries().items()
                   for name, entry in registry.items())
    if wanted == _STORED and "schema" in store.repo:
        return  # every compose calls this: rebuild only when a registry changed (a plugin, a test)
    store.repo.pop("schema", None)  # rebuilt from the registries as they are now (entries can go)
    for group, name, schema in wanted:
        node = OmegaConf.structured(schema)
        node.name = name  # one schema may serve several names (mnist, fashion_mnist, mnist_seq)
        store.store(group=f"schema/{group}", name=name, node=node)
    _STORED = wanted


_STORED: tuple = ()  # what register_schemas last put in the ConfigStore


def compose(conf: str, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The composed config including the `hydra` node, and the overrides; or a
    UserError naming the problem."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    check_experiment(conf)
    overrides = load_plugins_for(conf, list(overrides))
    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(primary_dir(conf)), version_base="1.3", job_name="nnrun"):
            cfg = hydra_compose(config_name=conf, overrides=with_search_path(conf, overrides),
                                return_hydra_config=True)
            return cfg, overrides
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(_override_error(err, overrides, conf)) from err
    except TypeError as err:  # Hydra's defaults list given a value it cannot take, e.g. schedule=[0]
        raise UserError(_bad_group_choice(overrides)) from err
    finally:
        GlobalHydra.instance().clear()


def _bad_group_choice(overrides: list[str]) -> str:
    """A group choice that is not one option name (a list, a number)."""
    groups = {p.name for d in config_dirs() for p in d.iterdir() if p.is_dir()}
    bad = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] in groups), None)
    if bad is None:
        return f"bad override among {' '.join(overrides)}: Hydra cannot use it as a config choice"
    group = bad.lstrip("+~").split("=", 1)[0]
    return f"bad override '{bad}': '{group}' takes one option name, e.g. {group}=<name> (see `nnrun list`)"


def primary_dir(conf: str) -> Path:
    """The config directory that holds experiment `conf` (the user's first, then nnrun's)."""
    from experiments.config import experiment_file

    return experiment_file(conf).parent


def search_path(conf: str, user: Optional[list[str]] = None) -> list[str]:
    """The other config directories (the user's and nnrun's own), as a Hydra override:
    groups and _base resolve in any of them. `user`: entries of the user's own
    `hydra.searchpath=[...]` override, searched first."""
    dirs = [quote("file://" + str(d)) for d in config_dirs() if d != primary_dir(conf)]
    entries = [*(quote(e) for e in user or []), *dirs]
    return [f"hydra.searchpath=[{','.join(entries)}]"] if entries else []


def with_search_path(conf: str, overrides: list[str]) -> list[str]:
    """`overrides` with one `hydra.searchpath` override: the user's entries (if they gave
    one) before the user config directories and nnrun's own."""
    user: list[str] = []
    rest = []
    for o in overrides:
        if o.lstrip("+~").split("=", 1)[0] == "hydra.searchpath":
            value = _yaml_value(o.split("=", 1)[1]) if "=" in o else None
            user += [str(v) for v in (value if isinstance(value, list) else [value] if value else [])]
        else:
            rest.append(o)
    return [*rest, *search_path(conf, user)]


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"cannot read the value '{text}': {' '.join(str(err).split())[:200]}") from err


def plugin_specs(conf: str, overrides: list[str]) -> tuple[list[str], bool]:
    """The plugins an experiment asks for: a `plugins=[...]` override, else the
    experiment file's own `plugins:` list. Returns them and whether an override gave them."""
    from experiments.config import experiment_file

    for o in reversed(overrides):
        if o.lstrip("+~").split("=", 1)[0] == "plugins" and "=" in o:
            value = _yaml_value(o.split("=", 1)[1])
            return _as_list(value, o), True
    import yaml

    try:
        data = yaml.safe_load(experiment_file(conf).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return [], False  # Hydra reports an unreadable experiment file with its own words
    return _as_list(data.get("plugins") if isinstance(data, dict) else None, "plugins:"), False


def _as_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise UserError(f"bad value in '{where}': plugins is a list of Python files or module names, "
                        "e.g. plugins=[my_models.py]")
    return items


def load_plugins_for(conf: str, overrides: list[str]) -> list[str]:
    """Load the installed `nnrun.plugins` entry points and the experiment's plugins (before
    their schemas are needed); return the overrides with file plugins made absolute, so the
    run's config records where they are (for eval, resume and sweep trials)."""
    from experiments.registry import is_plugin_file, load_plugins, resolve_plugin

    specs, given = plugin_specs(conf, overrides)
    load_plugins(specs)
    if not any(is_plugin_file(s) for s in specs):
        return overrides
    resolved = [resolve_plugin(s) for s in specs]
    return [*(o for o in overrides if o.lstrip("+~").split("=", 1)[0] != "plugins"), plugins_override(resolved)]


def plugins_override(specs: list[str]) -> str:
    """`plugins=[a,b]`, each quoted only where Hydra's grammar needs it (a readable command line)."""
    return f"plugins=[{','.join(s if re.fullmatch(r'[A-Za-z0-9_./-]+', s) else quote(s) for s in specs)}]"


def _schema_fields(group: str) -> set[str]:
    from dataclasses import fields

    registry = _registries().get(group)
    return {f.name for _, entry in registry.items() for f in fields(entry.schema)} if registry else set()


def _registries() -> dict:
    from experiments.data import DATASETS
    from experiments.models import MODELS
    from experiments.objectives import OBJECTIVES
    from experiments.optim import OPTIMIZERS, SCHEDULES
    from experiments.training import TRAINERS

    return {"model": MODELS, "data": DATASETS, "trainer": TRAINERS, "objective": OBJECTIVES,
            "optim": OPTIMIZERS, "schedule": SCHEDULES}


def _chosen_fields(conf: Optional[str], overrides: list[str], key: str) -> tuple[Optional[str], list[str]]:
    """The entry chosen for `key`'s group (e.g. the model `lenet5` for model.hiden) and its
    schema's keys, from the config composed without the offending override; else every
    entry's keys of the group."""
    from dataclasses import fields

    group = key.split(".")[0]
    registry = _registries().get(group)
    if registry is None:
        return None, []
    if conf is not None:
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(primary_dir(conf)), version_base="1.3", job_name="nnrun"):
                cfg = hydra_compose(config_name=conf, overrides=with_search_path(conf, rest))
            name = registry.canonical(str(cfg[group].name))
            return name, sorted(f.name for f in fields(registry.get(name).schema))
        except Exception:  # noqa: BLE001 - another error in the rest: fall back to the group's keys
            pass
        finally:
            GlobalHydra.instance().clear()
    return None, sorted(_schema_fields(group))


def _override_error(err: Exception, overrides: list[str], conf: Optional[str] = None) -> str:
    text = " ".join(str(err).split())
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        group = key.split(".")[0]
        chosen, allowed = _chosen_fields(conf, overrides, key) if "." in key else (None, [])
        close = difflib.get_close_matches(key.split(".", 1)[-1], allowed, n=1)
        did_you_mean = f"did you mean '{group}.{close[0]}'? " if close else ""
        whose = f"{group} '{chosen}'" if chosen else group
        hint = f"{did_you_mean}allowed keys for {whose}: {', '.join(allowed)}" if allowed else \
            "`nnrun train conf=<name> --cfg` prints every key"
        return f"unknown config key '{key}' in override '{_find(overrides, key)}'; {hint}"
    m = re.search(r"Could not find '([^']+)'", text) or re.search(r"In '[^']+': Could not load '([^']+)'", text)
    if m:
        group = m.group(1).split("/")[0]
        options = sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})
        hint = f"; available: {', '.join(options)}" if options else ""
        return f"unknown config choice '{m.group(1)}'{hint}"
    cause = " ".join(str(err.__cause__ or "").split())
    m = re.search(r"Error merging override (\S+)", text)
    if m and cause:  # a value of the wrong type for a schema key, e.g. trainer.epochs=abc
        detail = re.sub(r"\s*full_key:.*", "", cause)
        key = m.group(1).lstrip("+~").split("=", 1)[0]
        return f"bad value for '{key}' in override '{m.group(1)}': {detail}"
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
    overrides = load_plugins_for(conf, list(overrides))
    register_schemas()
    GlobalHydra.instance().clear()
    entry = hydra.main(version_base="1.3", config_path=str(primary_dir(conf)), config_name=conf)(task)
    argv = sys.argv
    sys.argv = [argv[0], *(["--multirun"] if multirun else []), *with_search_path(conf, overrides)]
    try:
        entry()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
