"""Runs a sweep's trials through a Hydra launcher plugin: Ray, submitit (local or SLURM).

`nnrun sweep ... hydra/launcher=NAME` hands its trials to `run_with_hydra_launcher`.
Hydra composes the multirun config (with the launcher's own settings), instantiates the
launcher plugin and gives it one job per trial, as its sweepers do: the job's overrides
are the trial's overrides plus `hydra.sweep.subdir=<trial id>`. So Hydra composes each
job's config from the trial's overrides itself, in the worker's job, and each trial's
directory <sweep_dir>/<trial id>/ holds what `nnrun train` writes there, `.hydra/`
included (`nnrun train resume=<trial dir>` works on it).

Hydra's own sweeper is left out on purpose: it can only expand comma lists into a
Cartesian product, and a sweep's trials are an explicit list (random, Optuna).

Not for: choosing trials (spec.py), running them in this process (local.py), reading
their results (results.py).
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from experiments.errors import UserError

from experiments.sweep.spec import Trial


log = logging.getLogger("nnrun")

# Concurrent trials may share a GPU: JAX must not grab 75% of its memory in each.
PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"
FREE_FORM = ("hydra.launcher.ray.init.", "hydra.launcher.ray.remote.", "hydra.launcher.additional_parameters.")
CLUSTER_EXTRA = "pip install 'nnrun[cluster]'"


def run_with_hydra_launcher(conf: str, trials: list[Trial], sweep_dir: Path, launcher_overrides: list[str]) -> None:
    """Train every trial as one job of the Hydra launcher that `launcher_overrides` pick
    (`hydra/launcher=ray`, `hydra.launcher.*=...`), each in <sweep_dir>/<trial.id>/.

    Every trial is composed and validated first: a bad trial fails the call before any
    job starts. A trial that fails while training does not stop the others: its
    summary.json says `failed`. Returns when the launcher has collected every job.
    """
    from experiments.hydra_bridge import quote

    if not trials:
        return
    _check_launcher_overrides(launcher_overrides)
    _check_ids(trials)
    added: set[str] = set()
    jobs = [[*_trial_overrides(conf, t, added), f"hydra.sweep.subdir={quote(t.id)}"] for t in trials]
    os.environ.setdefault(PREALLOCATE, "false")  # local workers (Ray, submitit, sbatch) inherit it
    overrides = [*map(_free_form, launcher_overrides), *_ray_existing_cluster(launcher_overrides),
                 f"hydra.sweep.dir={quote(str(Path(sweep_dir).resolve()))}"]
    with _hydra(conf) as hydra, _logging_kept():
        cfg = _compose_multirun(hydra, conf, overrides)
        name = cfg.hydra.runtime.choices.get("hydra/launcher")
        with _ray_session(name):
            try:
                returns = _launch(hydra, cfg, name, jobs)
            except (UserError, KeyboardInterrupt):
                raise
            except Exception as err:  # a worker died, a cluster job timed out, ...
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UserError(f"Hydra's '{name}' launcher failed: {type(err).__name__}: {first}; the trials "
                                f"that finished have their summary.json under {sweep_dir}") from err
    from hydra.core.utils import JobStatus

    for trial, ret in zip(trials, returns):  # run_trial catches the run's errors: these are nnrun's own
        if ret.status == JobStatus.FAILED:
            log.error("trial %s: its job failed before or after the run: %r", trial.id, ret._return_value)


def run_trial(cfg: DictConfig) -> str:
    """Hydra's task function for one trial's job; returns the run's status.

    Module-level, so that Ray and submitit pickle it by reference: a worker imports it
    from the installed nnrun. It catches the run's exceptions (run_experiment has then
    written summary.json as failed) so that one trial's failure is not the sweep's."""
    os.environ.setdefault(PREALLOCATE, "false")  # before this worker's first JAX backend
    from hydra.core.hydra_config import HydraConfig

    from experiments.hydra_bridge import task_config
    from experiments.runner import run_experiment

    hydra = HydraConfig.get()
    try:
        return run_experiment(task_config(cfg), Path(hydra.runtime.output_dir), hydra.job.config_name)["status"]
    except Exception as err:  # noqa: BLE001 - recorded in the trial's summary.json
        log.error("trial %s failed: %s", Path(hydra.runtime.output_dir).name, err)
        return "failed"


# ---------------------------------------------------------------------------- checks

# What each launcher imports only when it launches (so Hydra finds it without them)
RUNTIME_MODULES = {"ray": ("ray", "hydra_plugins.hydra_ray_launcher._core"),
                   "submitit_local": ("submitit",), "submitit_slurm": ("submitit",)}


def check_launcher(conf: str, launcher_overrides: list[str]) -> str:
    """Fail in one line, before a sweep directory exists, when the chosen Hydra launcher
    is unknown or cannot start here (its plugin or the library it drives is not
    installed). Returns the launcher's name."""
    import importlib

    _check_launcher_overrides(launcher_overrides)
    with _hydra(conf) as hydra, _logging_kept():
        cfg = _compose_multirun(hydra, conf, list(map(_free_form, launcher_overrides)))
    name = cfg.hydra.runtime.choices.get("hydra/launcher")
    target = str(cfg.hydra.launcher.get("_target_", ""))
    modules = [target.rsplit(".", 1)[0]] if "." in target else []
    for module in [*modules, *RUNTIME_MODULES.get(str(name), ())]:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"Hydra's '{name}' launcher cannot start here: {str(err).splitlines()[0]}; install "
                            f"it with `{CLUSTER_EXTRA}` (nothing was created)") from err
    return str(name)



def _check_launcher_overrides(overrides: list[str]) -> None:
    """Only Hydra's own settings: Hydra re-applies those (and only those) in every job."""
    for o in overrides:
        if not o.lstrip("+~").startswith(("hydra/", "hydra.")):
            raise UserError(f"'{o}' is not a launcher setting; launcher overrides are hydra/launcher=NAME "
                            "and hydra.launcher.KEY=VALUE")


def _free_form(override: str) -> str:
    """`++key=value` for keys of the launchers' free-form mappings (ray.init's and
    ray.remote's keyword arguments, extra sbatch options), which start out empty:
    Hydra would otherwise demand a `+` for a new key and refuse one for an existing key."""
    if override.startswith(FREE_FORM):
        return "++" + override
    return override


def _ray_existing_cluster(overrides: list[str]) -> list[str]:
    """The `ray` launcher asks ray.init for a small object store, which Ray refuses when it
    joins a running cluster (init.address=auto, ray://HOST:10001 or RAY_ADDRESS): drop it there."""
    keys = {o.lstrip("+~").split("=", 1)[0]: o.split("=", 1)[-1] for o in overrides}
    address = keys.get("hydra.launcher.ray.init.address", os.environ.get("RAY_ADDRESS"))
    joins = address not in (None, "", "null", "local")
    if joins and "hydra.launcher.ray.init.object_store_memory" not in keys:
        return ["++hydra.launcher.ray.init.object_store_memory=null"]
    return []


def _check_ids(trials: list[Trial]) -> None:
    twice = [i for i, n in Counter(t.id for t in trials).items() if n > 1]
    if twice:
        raise UserError(f"trial id '{twice[0]}' is used twice; each trial needs its own directory")


def _trial_overrides(conf: str, trial: Trial, added: set[str]) -> list[str]:
    """The trial's overrides as Hydra accepts them (schema keys the YAML omits turned
    into `+key`), after checking its config against the schemas.

    `added` collects the keys that needed a `+`: trials of one sweep share their keys,
    so the next trial is tried with them first (one composition instead of one per key)."""
    from experiments.hydra_bridge import compose, task_config
    from experiments.config import validate

    guess = [f"+{o}" if o.split("=", 1)[0] in added else o for o in trial.overrides]
    try:
        try:
            cfg, overrides = compose(conf, guess)
        except UserError:
            if guess == trial.overrides:
                raise
            cfg, overrides = compose(conf, trial.overrides)  # another group choice: another YAML
        validate(task_config(cfg))
    except UserError as err:
        raise UserError(f"trial {trial.id}: {err}") from err
    added.update(o[1:].split("=", 1)[0] for o in overrides if o.startswith("+") and not o.startswith("++"))
    return overrides


# ---------------------------------------------------------------------------- Hydra


class _hydra:
    """Hydra initialised on the experiment's config directory (what `hydra.main` does), as a context."""

    def __init__(self, conf: str):
        self.conf = conf

    def __enter__(self) -> Any:
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from experiments.hydra_bridge import _register_resolvers, primary_dir, register_schemas

        _register_resolvers()
        register_schemas()
        GlobalHydra.instance().clear()
        self._init = initialize_config_dir(config_dir=str(primary_dir(self.conf)), version_base="1.3",
                                           job_name="nnrun")
        self._init.__enter__()
        return GlobalHydra.instance().hydra

    def __exit__(self, *exc: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        self._init.__exit__(*exc)
        GlobalHydra.instance().clear()


def _compose_multirun(hydra: Any, conf: str, overrides: list[str]) -> DictConfig:
    """The sweep's master config: the experiment plus the launcher's settings."""
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from experiments.hydra_bridge import search_path

    try:
        return hydra.compose_config(conf, [*overrides, *search_path(conf)], run_mode=RunMode.MULTIRUN,
                                    with_log_configuration=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        text = " ".join(str(err).split())
        if "hydra/launcher" in text and ("Could not find" in text or "Could not load" in text):
            options = ", ".join(hydra.config_loader.get_group_options("hydra/launcher"))
            given = next((o for o in overrides if o.lstrip("+~").startswith("hydra/launcher=")), "hydra/launcher")
            raise UserError(f"unknown Hydra launcher in '{given}'; installed: {options} "
                            f"(ray and submitit_local/submitit_slurm come with `{CLUSTER_EXTRA}`)") from err
        raise UserError(f"bad launcher override: {text[:300]}") from err


def _launch(hydra: Any, cfg: DictConfig, name: Optional[str], jobs: list[list[str]]) -> list[Any]:
    """Instantiate the launcher plugin and run the jobs, as Hydra's sweepers do."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    callbacks = Callbacks(cfg)
    callbacks.on_multirun_start(config=cfg, config_name=cfg.hydra.job.config_name)
    try:
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
            task_function=run_trial, config=cfg)
    except ImportError as err:
        raise UserError(f"Hydra's '{name}' launcher cannot start: {str(err).splitlines()[0]}; "
                        f"install it with `{CLUSTER_EXTRA}`") from err
    returns = list(launcher.launch(jobs, initial_job_idx=0))
    callbacks.on_multirun_end(config=cfg, config_name=cfg.hydra.job.config_name)
    return returns


class _logging_kept:
    """Hydra configures the root logger for its console output and, with the in-process
    `basic` launcher, for each job's run.log: put it back as it was afterwards."""

    def __enter__(self) -> "_logging_kept":
        root = logging.getLogger()
        self.level, self.handlers = root.level, list(root.handlers)
        return self

    def __exit__(self, *exc: Any) -> None:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h not in self.handlers]:
            root.removeHandler(handler)
            handler.close()
        for handler in self.handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(self.level)


class _ray_session:
    """Shut down the local Ray cluster that the `ray` launcher starts, if it started one
    (it leaves it running); a Ray session that was there before stays up."""

    def __init__(self, launcher: Optional[str]):
        self.ray = None
        if launcher == "ray":
            try:
                import ray
            except ImportError:  # reported when the launcher is instantiated
                return
            self.ray = None if ray.is_initialized() else ray

    def __enter__(self) -> "_ray_session":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()
