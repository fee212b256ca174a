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
experiments/sweep/ and driver.py); the training step itself, which is
experiments/training/supervised.py's, vmapped here.
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
import numpy as np
import yaml
from omegaconf import OmegaConf

from experiments.checkpoints import Checkpointer
from experiments.config import Experiment, validate
from experiments.data import load_dataset
from experiments.errors import NonFiniteLossError, UserError
from experiments.models import DataInfo, build_model
from experiments.runner import one_line, plot_quietly
from experiments.runs import CONFIG, Run, StopRequest, write_text_atomic
from experiments.training.optim import make_transform
from experiments.training.progress import TrainProgress
from experiments.training.supervised import (
    Evaluator, History, TrainState, build_setup, end_epoch, epoch_order, init_state, log_chunk, make_chunk,
    make_train_step, model_variables, run_chunk, summary_fields,
)

from experiments.sweep.spec import Trial


log = logging.getLogger("nnrun")

# optimizer fields traced per trial (make_transform's `values`), and those among them
# whose zero-ness decides the chain's structure
OPTIM_TRACED = ("momentum", "b1", "b2", "eps", "weight_decay", "clip_norm")
OPTIM_STRUCTURAL = ("weight_decay", "clip_norm")

# Trials/hour vectorised / one process per trial, for the 16-trial grids (4 lr x 4 seeds,
# 2 epochs, full MNIST) of benchmarks/sweep_vectorize.py on the shared 2-core XLA-CPU
# machine (benchmarks/results/sweep_vectorize-20261127-*.json). "dense": models made of
# matmuls: the MLP, 4.2x measured, and LeNet5 in its CHWN layout (convolutions as patch
# matmuls), 1.74x extrapolated from 60-step runs (4.7x at 60 steps). "conv": models with
# XLA convolutions (LeNet5 with model.layout=NHWC), 0.48x extrapolated from 40-step runs:
# vmapped, the convolutions become grouped ones, which ran at 0.35x the images/s per
# trial of one trial alone. Below 1, --vectorize declines that kind of model on that
# backend; unmeasured backends vectorise.
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
    if exp.trainer.name != "supervised":
        return f"the {exp.trainer.name} loop is not vectorised"
    if exp.resume:
        return "a resumed run continues alone"
    return ""


def vmappable_keys(exp: Experiment) -> set[str]:
    """Dotted config keys whose values may differ within a group."""
    model = getattr(type(exp.model), "vmappable", ())
    schedule = [f"schedule.{f.name}" for f in dataclasses.fields(exp.schedule)]
    return {"seed", "optim.lr", *(f"optim.{k}" for k in OPTIM_TRACED), *schedule, *(f"model.{k}" for k in model)}


def _structural_keys(exp: Experiment) -> set[str]:
    """Vmappable keys whose zero-ness (not value) must agree: it adds or removes a transform or layer."""
    model = getattr(type(exp.model), "vmappable", ())
    return {*(f"optim.{k}" for k in OPTIM_STRUCTURAL), *(f"model.{k}" for k in model)}


def _flat(exp: Experiment) -> dict[str, Any]:
    """The validated config as dotted keys (defaults filled in, so equal settings compare equal)."""
    groups = {g: dataclasses.asdict(getattr(exp, g)) for g in ("model", "data", "optim", "schedule", "trainer")}
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


def has_convolutions(exp: Experiment) -> bool:
    """Whether the model's forward pass contains a convolution (vmap turns those into
    grouped convolutions, which XLA-CPU runs slowly)."""
    key = (repr(exp.model), repr(exp.data))
    if key not in _CONVOLUTIONS:
        dataset = load_dataset(exp.data)
        model = build_model(exp.model, DataInfo(dataset.input_shape, dataset.num_classes))
        x = jnp.zeros((1, *dataset.input_shape), jnp.float32)
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
    runs = [Run(Path(sweep_dir) / t.id, conf) for t in group]
    summaries = [_start_run(exp, _composed(conf, tuple(t.overrides))[1], run, conf, started, len(group))
                 for t, exp, run in zip(group, exps, runs)]
    done: set[int] = set()
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
            summary.update(wall_time_s=round(total / len(group), 3), group_wall_time_s=round(total, 3))
            summary.setdefault("finished_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
            run.write_summary(summary)
    log.info("vectorised group of %d: %s", len(group), [s["status"] for s in summaries])


def _start_run(exp: Experiment, overrides: tuple[str, ...], run: Run, conf: str, started: str, size: int) -> dict:
    """config.yaml, .hydra/overrides.yaml (what `nnrun train resume=` reads) and a running summary."""
    saved = OmegaConf.to_yaml(OmegaConf.masked_copy(exp.raw, [k for k in exp.raw if k != "resume"]))
    write_text_atomic(run.dir / CONFIG, saved)
    write_text_atomic(run.dir / ".hydra" / "overrides.yaml", yaml.safe_dump(list(overrides)))
    summary = {"experiment": conf, "run_dir": str(run.dir), "seed": exp.seed, "started_at": started,
               "resumed": False, "vectorized": True, "group_size": size}
    run.write_summary({**summary, "status": "running"})
    return summary


def _train_group(exps: list[Experiment], runs: list[Run], summaries: list[dict], done: set[int],
                 stop: StopRequest, t0: float) -> None:
    t = exps[0].trainer  # validated with the experiment (SupervisedTrainerConfig)
    data = load_dataset(exps[0].data)
    setups = [build_setup(exp, data) for exp in exps]
    ref, size = setups[0], len(exps)
    backend = jax.default_backend()
    total_steps = ref.steps_per_epoch * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)

    # ---- per-trial values, stacked along the leading trial axis
    hp = _stacked_hyperparameters(exps, setups, total_steps)
    info = DataInfo(data.input_shape, data.num_classes)

    def lane(hp: dict) -> tuple[Any, Any]:
        """One trial's model and optimizer, its hyperparameters traced."""
        model = build_model(dataclasses.replace(exps[0].model, **hp["model"]), info) if hp["model"] else ref.model
        return model, make_transform(exps[0].optim, lambda count: hp["lr"][count], hp["optim"])

    def lane_step(state, hp, X, Y, order, i):
        model, tx = lane(hp)
        return make_train_step(model, tx, t.batch_size, hp["dropout_key"])(state, X, Y, order, i)

    def lane_chunk(state, hp, X, Y, order, start):
        model, tx = lane(hp)
        return make_chunk(make_train_step(model, tx, t.batch_size, hp["dropout_key"]), t.log_every)(
            state, X, Y, order, start)

    in_axes = (0, 0, None, None, 0, None)
    step_fn = jax.jit(jax.vmap(lane_step, in_axes=in_axes), donate_argnums=0)
    chunk_fn = jax.jit(jax.vmap(lane_chunk, in_axes=in_axes), donate_argnums=0) if t.scan else None
    evaluator = Evaluator(ref.model, t.eval_batch_size)
    with ExitStack() as closing:  # the checkpointers close on errors too
        ckpts = [closing.enter_context(Checkpointer(run.checkpoint_dir, keep=t.keep)) for run in runs]

        # ---- initial states: each trial's exactly as initial_state(setup) makes it. One jitted
        # init called per trial, not a vmapped one: XLA-CPU compiled the vmapped init ~3x slower.
        # Trial 0's model and optimizer serve all: init does not read dropout rates or optimizer values.
        init = jax.jit(lambda key: init_state(ref.model, ref.tx, key, data.input_shape))
        state = _stack([init(jax.random.fold_in(s.key, 0)) for s in setups])
        X, Y = jax.device_put(data.train.x), jax.device_put(data.train.y)
        n_train, spe = len(data.train), ref.steps_per_epoch

        # ---- loop: the supervised loop's, with one host sync per chunk for all trials
        histories = [History() for _ in exps]
        alive = list(range(size))
        step, status, sums = 0, "completed", None
        progress = TrainProgress(t.epochs, spe, enabled=t.progress)
        with progress:
            for epoch in range(t.epochs):
                if step >= total_steps or not alive:
                    break
                order = jnp.asarray(np.stack([np.asarray(epoch_order(s.key, epoch, n_train)) for s in setups]))
                state = state.replace(epoch_sums=jnp.zeros((size, 3), jnp.float32))
                prev, i = np.asarray(state.epoch_sums), 0
                while i < spe and step < total_steps and not stop:
                    n = min(t.log_every, spe - i, total_steps - step)
                    chunk_start = time.perf_counter()
                    state, n = run_chunk(state, (hp, X, Y, order), i, n, step_fn, chunk_fn, t.log_every, stop)
                    sums = np.asarray(state.epoch_sums)  # the one host sync per chunk
                    elapsed = time.perf_counter() - chunk_start
                    i, step = i + n, step + n
                    bad = np.asarray(state.first_bad_step)
                    for k in [k for k in alive if bad[k] >= 0]:
                        _fail(k, NonFiniteLossError(int(bad[k]), float("nan")), runs, summaries, done, t0)
                        alive.remove(k)
                    shown = []
                    for k in alive:
                        shown.append(log_chunk(runs[k], histories[k], sums[k], prev[k], elapsed, step, epoch + i / spe,
                                               float(setups[k].lr_schedule(step - 1))))
                    prev = sums
                    if shown:  # the group's mean loss and accuracy, and its total images/s
                        ips = shown[0][2] and sum(r[2] for r in shown)
                        progress.update(epoch, i, float(np.mean([r[0] for r in shown])),
                                        float(np.mean([r[1] for r in shown])), ips)
                if stop:
                    status = "interrupted"
                    for k in alive:
                        ckpts[k].save("last", step, _lane(state, k))
                    break
                epoch_done = epoch + i / spe
                last_epoch = i < spe or epoch + 1 == t.epochs or step >= total_steps
                for k in alive:
                    end_epoch(_lane(state, k), sums[k], epoch_done, step, data, evaluator, runs[k], histories[k],
                              ckpts[k], t.best_metric, periodic=last_epoch or (epoch + 1) % t.checkpoint_every == 0)
                progress.end_epoch(epoch + 1, None)
                if i < spe:
                    break

        for k in alive:
            summaries[k].update(summary_fields(status, step, spe, histories[k], backend, t.scan))
            if status == "completed":
                summaries[k]["test"] = evaluator(model_variables(_lane(state, k)), data.test)
            if status == "interrupted":
                summaries[k]["interrupted_by"] = stop.name
            done.add(k)


def _stacked_hyperparameters(exps: list[Experiment], setups: list, total_steps: int) -> dict:
    """The traced per-trial values: lr per step, the optimizer and model fields that
    differ within the group, and the dropout keys. Fields equal in every trial stay
    Python constants, so the program is the single-run one wherever nothing differs."""
    def differing(objs: list, names: tuple[str, ...]) -> dict:
        return {n: jnp.asarray([getattr(o, n) for o in objs], jnp.float32) for n in names
                if len({repr(getattr(o, n)) for o in objs}) > 1}

    counts = jnp.arange(total_steps)
    tables = jax.jit(lambda: jnp.stack([jnp.asarray(jax.vmap(s.lr_schedule)(counts), jnp.float32) for s in setups]))
    return {
        "lr": tables(),  # [trials, steps]: one program for all schedules (eagerly, each op would compile alone)
        "optim": differing([e.optim for e in exps], OPTIM_TRACED),
        "model": differing([e.model for e in exps], tuple(getattr(type(exps[0].model), "vmappable", ()))),
        "dropout_key": jnp.stack([jax.random.fold_in(s.key, 2) for s in setups]),
    }


@jax.jit
def _lane(state: TrainState, k: int) -> TrainState:
    """Trial k's state, shaped exactly like a single run's."""
    return jax.tree.map(lambda a: a[k], state)


@jax.jit
def _stack(states: list[TrainState]) -> TrainState:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def _fail(k: int, err: Exception, runs: list[Run], summaries: list[dict], done: set[int], t0: float) -> None:
    """Record trial k as failed now; the group goes on without it."""
    summaries[k].update(status="failed", error=one_line(err),
                        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    runs[k].write_summary({**summaries[k], "wall_time_s": round(time.perf_counter() - t0, 3)})
    done.add(k)
    log.error("trial %s failed: %s", runs[k].dir.name, summaries[k]["error"])
