"""Vectorised sweep trials: trials that differ only in hyperparameters that leave every
array shape alone train together as one vmapped, jitted program in one process.

What may differ inside a group: the seed (initial parameters, data order, dropout), the
learning rate and the whole schedule (each trial's schedule becomes a per-step table),
the optimizer's coefficients (momentum, b1, b2, eps, weight_decay, clip_norm; traced
through `make_transform(values=...)`), and the model fields a model declares
`vmappable` (the MLP's dropout rate). Everything else (model, data, batch size, epochs,
optimizer, ...) must be equal, and so must whether weight_decay, clip_norm and those
model fields are zero: that decides which transforms and layers exist.

Each trial still gets its own run directory with the files a normal run writes
(config.yaml, .hydra/overrides.yaml, metrics.jsonl, summary.json, checkpoints/last and
checkpoints/best holding that trial's un-stacked TrainState), so `nnrun eval` and
`nnrun train resume=` work on it. A trial whose loss turns non-finite fails alone.

Not for: choosing or launching trials, or reading their results (the rest of
experiments/sweep/ and driver.py); training itself, which is the one loop driver's
(experiments/training/driver.py, `train_lanes`) with a trial axis.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from contextlib import ExitStack
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import yaml
from omegaconf import OmegaConf

from experiments.config import Experiment, validate
from experiments.data import load_dataset
from experiments.errors import UserError
from experiments.locks import hold
from experiments.models import build_model, data_info
from experiments.runner import one_line, plot_quietly
from experiments.runs import CONFIG, Run, StopRequest, write_text_atomic
from experiments.training import TRAINERS
from experiments.training.driver import train_lanes

from experiments.sweep.spec import Trial


log = logging.getLogger("nnrun")

# Trials/hour vectorised / one process per trial, for the 16-trial grids of
# benchmarks/sweep_vectorize.py on the 2-core CPU (numbers and commands: docs/results.md).
# "dense": models made of matmuls (the MLP; LeNet5 in its CHWN layout); "conv": models
# with XLA convolutions, which vmap turns into slow grouped convolutions on XLA-CPU.
# Below 1, --vectorize declines that kind of model on that backend; unmeasured backends vectorise.
MEASURED_SPEEDUP = {("cpu", "dense"): 4.2, ("cpu", "conv"): 0.48}


# ----------------------------------------------------------------------------- planning


def plan_vectorized(conf: str, trials: list[Trial], force: bool) -> tuple[list[list[Trial]], list[Trial], str]:
    """Split `trials` into groups trained together and trials run separately.

    Returns (groups, fallback, reason): every group has at least two trials whose configs
    are equal except for vmappable hyperparameters; `fallback` keeps the trials' order;
    `reason` is one line saying why trials fall back ("" when none do). A group is
    declined where benchmarks/sweep_vectorize.py measured vectorising to lose, unless `force`.
    """
    buckets: dict[tuple, list[Trial]] = {}
    valid: list[Experiment] = []
    reasons: dict[str, list[Trial]] = {}  # why -> trials that run separately for that reason
    for trial in trials:
        try:
            exp = experiment(conf, tuple(trial.overrides))
        except UserError:
            reasons.setdefault("their config does not validate", []).append(trial)  # their own runs say why
            continue
        why = _loop_reason(exp)
        if why:
            reasons.setdefault(why, []).append(trial)
            continue
        valid.append(exp)
        buckets.setdefault(_signature(exp), []).append(trial)

    groups = []
    alone = _split_reason(valid) if any(len(m) < 2 for m in buckets.values()) else ""
    for members in buckets.values():
        if len(members) < 2:
            reasons.setdefault(alone, []).extend(members)
            continue
        declined = "" if force else decline_reason(experiment(conf, tuple(members[0].overrides)))
        if declined:
            reasons.setdefault(declined, []).extend(members)
        else:
            groups.append(members)

    index = {t.id: i for i, t in enumerate(trials)}
    fallback = sorted((t for ts in reasons.values() for t in ts), key=lambda t: index[t.id])
    lines = [why if why.startswith("--vectorize") else f"{len(ts)} trial(s) run separately: {why}"
             for why, ts in reasons.items()]
    return groups, fallback, "; ".join(lines)


def experiment(conf: str, overrides: tuple[str, ...]) -> Experiment:
    """A trial's validated experiment (composed once per process: planning and training share it)."""
    return _composed(conf, overrides)[0]


@lru_cache(maxsize=1024)
def _composed(conf: str, overrides: tuple[str, ...]) -> tuple[Experiment, tuple[str, ...]]:
    """The validated experiment, and the overrides as Hydra accepted them (+key=value for schema keys)."""
    from experiments.hydra_bridge import compose, task_config

    cfg, accepted = compose(conf, list(overrides))
    return validate(task_config(cfg)), tuple(accepted)


def _loop_reason(exp: Experiment) -> str:
    if TRAINERS.get(exp.trainer.name).hyperparameters is None:
        return f"the {exp.trainer.name} trainer is not vectorised"
    if exp.resume:
        return "a resumed run continues alone"
    if exp.trainer.devices not in (1, None):  # null (auto) lets a vmapped group use one device
        return "a run that splits its batches over devices (trainer.devices) trains alone"
    return ""


def vmappable_keys(exp: Experiment) -> set[str]:
    """Dotted config keys whose values may differ within a group."""
    return TRAINERS.get(exp.trainer.name).vmappable(exp)


def _structural_keys(exp: Experiment) -> set[str]:
    """Vmappable keys whose zero-ness (not value) must agree: it adds or removes a transform or layer."""
    return TRAINERS.get(exp.trainer.name).structural(exp)


def _flat(exp: Experiment) -> dict[str, Any]:
    """The validated config as dotted keys (defaults filled in, so equal settings compare equal)."""
    groups = {g: dataclasses.asdict(getattr(exp, g)) for g in ("model", "data", "objective", "optim", "schedule",
                                                                "trainer") if getattr(exp, g) is not None}
    return {"seed": exp.seed, **{f"{g}.{k}": v for g, d in groups.items() for k, v in d.items()}}


def _signature(exp: Experiment) -> tuple:
    """What must be equal within a group: every non-vmappable key's value, and the zero-ness of structural ones."""
    vmappable, structural = vmappable_keys(exp), _structural_keys(exp)
    return tuple((key, bool(value)) if key in structural else (key, repr(value))
                 for key, value in sorted(_flat(exp).items()) if key in structural or key not in vmappable)


def _split_reason(exps: list[Experiment]) -> str:
    """The keys that set trials apart: those whose values (or, for structural keys, zero-ness) differ."""
    signatures = [dict(_signature(e)) for e in exps]
    keys = sorted({k for s in signatures for k in s if len({repr(o.get(k)) for o in signatures}) > 1})
    return f"no other trial shares their {', '.join(keys) or 'settings'} (these change shapes or the training loop)"


def decline_reason(exp: Experiment) -> str:
    """Why vectorising this experiment is expected to lose here ("" if it is not)."""
    backend = jax.default_backend()
    kind = "conv" if has_convolutions(exp) else "dense"
    ratio = MEASURED_SPEEDUP.get((backend, kind))
    if ratio is None or ratio >= 1.0:
        return ""
    what = "convolutions" if kind == "conv" else "layers"
    return (f"--vectorize declined for {exp.model.name} on {backend}: vmapped {what} measured {ratio:.2g}x the "
            f"trials/hour of separate runs (benchmarks/sweep_vectorize.py); use --force-vectorize to override")


def has_convolutions(exp: Experiment, dataset: Any = None) -> bool:
    """Whether the model's forward pass contains a convolution (vmap turns those into
    grouped convolutions, which XLA-CPU runs slowly). `dataset`: the experiment's, when the
    caller has it loaded already."""
    key = (repr(exp.model), repr(exp.data))
    if key not in _CONVOLUTIONS:
        dataset = dataset if dataset is not None else load_dataset(exp.data)
        model = build_model(exp.model, data_info(dataset))
        x = jnp.asarray(dataset.train.sample(1)["x"])
        jaxpr = jax.make_jaxpr(lambda k: model.init(k, x, train=False))(jax.random.key(0))
        _CONVOLUTIONS[key] = any(eqn.primitive.name == "conv_general_dilated" for eqn in _equations(jaxpr.jaxpr))
    return _CONVOLUTIONS[key]


_CONVOLUTIONS: dict[tuple[str, str], bool] = {}


def _equations(jaxpr: Any):
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


# ----------------------------------------------------------------------------- training


def run_vectorized_group(conf: str, group: list[Trial], sweep_dir: Path) -> None:
    """Train `group` as one vmapped program; each trial writes <sweep_dir>/<trial.id>/.

    Trials that fail (non-finite loss) are recorded and the others go on. An exception
    that stops the whole group is recorded in every unfinished trial's summary, then raised.
    """
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    exps = [experiment(conf, tuple(t.overrides)) for t in group]
    for t in group:  # as `nnrun train`: never write into an existing run
        path = Path(sweep_dir) / t.id
        if path.exists() and any(path.iterdir()):
            raise UserError(f"run directory {path} already exists and is not empty; nnrun never overwrites a run")
    runs = [Run(Path(sweep_dir) / t.id) for t in group]
    with ExitStack() as locks:  # one writer per trial directory, as for a run of its own
        for run in runs:
            locks.enter_context(hold(run.dir))
        _train_and_log(conf, group, exps, runs, started, t0)


def _train_and_log(conf: str, group: list[Trial], exps: list[Experiment], runs: list[Run], started: str,
                   t0: float) -> None:
    summaries = [_start_run(exp, _composed(conf, tuple(t.overrides))[1], run, conf, started, len(group))
                 for t, exp, run in zip(group, exps, runs)]
    done: set[int] = set()
    with _RunLogs(runs) as logs:
        logs.each(lambda k: f"run {conf}: {exps[k].model.name} in {runs[k].dir}, trained in one vectorised group "
                            f"with trials {' '.join(t.id for t in group)} (their shared log lines follow)")
        try:
            _run_group(exps, runs, summaries, done, t0)
        finally:
            logs.each(lambda k: f"run {summaries[k].get('status', 'failed')}: " + _result_line(summaries[k]))


def _result_line(summary: dict) -> str:
    test = summary.get("test")
    if isinstance(test, dict):
        return "test " + ", ".join(f"{k} {v:.4g}" for k, v in test.items() if isinstance(v, float))
    return summary.get("error") or ""


class _RunLogs:
    """Each trial's run.log, as `nnrun train` writes one through Hydra's job logging: the
    group's shared lines (epochs, the group's status) and each trial's own first and last line."""

    FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

    def __init__(self, runs: list[Run]):
        self.runs = runs
        self.shared = logging.getLogger("nnrun")
        self.own: list[logging.Logger] = []
        self.handlers: list[logging.Handler] = []

    def __enter__(self) -> "_RunLogs":
        self.level = self.shared.level
        if self.shared.getEffectiveLevel() > logging.INFO:
            self.shared.setLevel(logging.INFO)
        for run in self.runs:
            handler = logging.FileHandler(run.dir / "run.log")
            handler.setFormatter(logging.Formatter(self.FORMAT))
            self.shared.addHandler(handler)
            own = logging.getLogger(f"nnrun.trial.{run.dir.name}")
            own.propagate, own.level = False, logging.INFO
            own.addHandler(handler)
            self.own.append(own)
            self.handlers.append(handler)
        return self

    def each(self, message) -> None:
        for k, own in enumerate(self.own):
            own.info("%s", message(k))

    def __exit__(self, *exc: Any) -> None:
        for own, handler in zip(self.own, self.handlers):
            self.shared.removeHandler(handler)
            own.removeHandler(handler)
            handler.close()
        self.shared.setLevel(self.level)


def _run_group(exps: list[Experiment], runs: list[Run], summaries: list[dict], done: set[int], t0: float) -> None:
    try:
        with StopRequest() as stop:
            _train_group(exps, runs, summaries, done, stop, t0)
    except BaseException as err:  # noqa: BLE001 - recorded in each unfinished trial, then re-raised
        for k, summary in enumerate(summaries):
            if k not in done:
                summary.update(status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                               error=one_line(err))
                if not isinstance(err, (UserError, KeyboardInterrupt)):
                    summary["traceback"] = traceback.format_exc()
        raise
    finally:
        for exp, run in zip(exps, runs):
            if exp.trainer.plots:
                plot_quietly(run.dir)
        total = time.perf_counter() - t0
        for run, summary in zip(runs, summaries):
            summary.update(wall_time_s=round(total / len(runs), 3), group_wall_time_s=round(total, 3))
            summary.setdefault("finished_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
            run.write_summary(summary)
    log.info("vectorised group of %d: %s", len(runs), [s["status"] for s in summaries])


def _start_run(exp: Experiment, overrides: tuple[str, ...], run: Run, conf: str, started: str, size: int) -> dict:
    """config.yaml, .hydra/overrides.yaml (what `nnrun train resume=` reads) and a running summary."""
    saved = OmegaConf.to_yaml(OmegaConf.masked_copy(exp.raw, [k for k in exp.raw if k != "resume"]))
    write_text_atomic(run.dir / CONFIG, saved)
    write_text_atomic(run.dir / ".hydra" / "overrides.yaml", yaml.safe_dump(list(overrides)))
    write_text_atomic(run.dir / ".hydra" / "config.yaml", saved)  # as Hydra writes it for `nnrun train`
    write_text_atomic(run.dir / ".hydra" / "hydra.yaml", _hydra_yaml(conf, overrides, run.dir))
    summary = {"experiment": conf, "run_dir": str(run.dir), "seed": exp.seed, "started_at": started,
               "resumed": False, "vectorized": True, "group_size": size}
    run.write_summary({**summary, "status": "running"})
    return summary


def _hydra_yaml(conf: str, overrides: tuple[str, ...], run_dir: Path) -> str:
    """Hydra's own settings for the trial (launcher, logging, choices), unresolved, as in
    the .hydra/hydra.yaml of a run Hydra started; `runtime.output_dir` is the trial's directory."""
    from experiments.hydra_bridge import compose

    hydra = compose(conf, list(overrides))[0].hydra
    node = OmegaConf.create({"hydra": OmegaConf.to_container(hydra, resolve=False)})
    node.hydra.runtime.output_dir = str(run_dir)
    return OmegaConf.to_yaml(node)


def _train_group(exps: list[Experiment], runs: list[Run], summaries: list[dict], done: set[int],
                 stop: StopRequest, t0: float) -> None:
    """The driver's loop with a trial axis; a trial that diverges is recorded at once."""
    def failed(k: int, err: Exception) -> None:
        _fail(k, err, runs, summaries, done, t0)

    for k, result in enumerate(train_lanes(exps, runs, stop, on_failure=failed)):
        if result is not None:
            summaries[k].update(result)
            done.add(k)


def _fail(k: int, err: Exception, runs: list[Run], summaries: list[dict], done: set[int], t0: float) -> None:
    """Record trial k as failed now; the group goes on without it."""
    summaries[k].update(status="failed", error=one_line(err),
                        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    runs[k].write_summary({**summaries[k], "wall_time_s": round(time.perf_counter() - t0, 3)})
    done.add(k)
    log.error("trial %s failed: %s", runs[k].dir.name, summaries[k]["error"])
