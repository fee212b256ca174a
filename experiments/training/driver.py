"""The one loop driver: runs any step-based trainer, for one run or for a vectorised
group of sweep trials (lanes), with everything they share.

A trainer supplies pure steps (init, train step, eval step; training/__init__.py). The
driver owns the rest, read top to bottom below: placing data and state on the device,
the epoch order, chunked stepping (scanned or per step, one host sync per chunk), stop
requests, non-finite detection, metrics records, the epoch end (validation, best,
checkpoint cadence, keep-K), resume, the progress bar, the summary fields and the final
test evaluation.

One run is the case of one lane with nothing stacked. A vectorised group stacks the
lanes' states on a leading axis and vmaps the same step over it; per-lane values (the
seed's keys, learning-rate tables, traced optimizer and model fields) travel in `hp`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from experiments.checkpoints import Checkpointer
from experiments.config import Experiment
from experiments.data import Dataset, Split, load_dataset
from experiments.data.augment import augment
from experiments.errors import NonFiniteLossError, UserError
from experiments.objectives import Metric, Objective
from experiments.runs import Run, StopRequest
from experiments.training import TRAINERS, Steps, Streams, best_metric
from experiments.training.parallel import Placement, batch_mesh
from experiments.training.progress import TrainProgress
from experiments.writers import open_writers


class LoopState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: steps taken
    inner: Any  # the trainer's own state (parameters, optimizer state, ...)
    sums: dict  # the objective's metric sums over the current epoch
    chunk_sums: dict  # `sums` when the current logging chunk began (a resume mid-chunk logs it whole)
    first_bad_step: jax.Array  # first step (1-based, like `step` after it) with a non-finite loss, -1 if none


# ----------------------------------------------------------------------------- keys
# Every random choice derives from the seed's key by a fixed path, so a run is fully
# determined by its config and seed, and a resumed run repeats what the uninterrupted one did.


def init_key(key: jax.Array) -> jax.Array:
    return jax.random.fold_in(key, 0)


@partial(jax.jit, static_argnums=(2, 3))
def epoch_plan(key: jax.Array, epoch: int, n: int, split: Split) -> dict:
    """The epoch's example order (in order for a split with `shuffle = False`: streams of
    consecutive windows) and window phase."""
    order = (jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 1), epoch), n)
             if getattr(split, "shuffle", True) else jnp.arange(n))
    phase = split.epoch_phase(jax.random.fold_in(jax.random.fold_in(key, 3), epoch))
    return {"order": order, "phase": jnp.asarray(phase, jnp.int32)}


def step_streams(key: jax.Array, step: jax.Array) -> Streams:
    return Streams(jax.random.fold_in(jax.random.fold_in(key, 2), step))


# ----------------------------------------------------------------------------- the step


def make_step(steps_for: Callable[[dict], Steps], split: Split, batch_size: int, augment_ops: list,
              placement: Placement = Placement()) -> Callable:
    """A pure step: (state, hp, data arrays, epoch plan, i) -> state, training on batch i of the
    plan (split over the placement's devices)."""

    def step(state: LoopState, hp: dict, arrays: dict, plan: dict, i) -> LoopState:
        steps = steps_for(hp)
        rngs = step_streams(hp["key"], state.step)
        idx = jax.lax.dynamic_slice_in_dim(plan["order"], i * batch_size, batch_size)
        batch = placement.shard_batch(split.gather(arrays, idx, plan["phase"]), batch_size)
        if augment_ops:
            batch = {**batch, "x": augment(augment_ops, rngs["augment"], batch["x"])}
        inner, sums = steps.train_step(state.inner, batch, rngs)
        total = jax.tree.map(jnp.add, state.sums, sums)
        # a finite loss so large that the running sum overflows is a diverged run too
        bad = (state.first_bad_step < 0) & ~(jnp.isfinite(sums["loss"]) & jnp.isfinite(total["loss"]))
        return state.replace(step=state.step + 1, inner=inner, sums=total,
                             first_bad_step=jnp.where(bad, state.step + 1, state.first_bad_step))

    return step


def scan_pays(exp: Experiment, data: Optional[Dataset] = None) -> bool:
    """Whether chunks and evaluation run as lax.scan programs (`trainer.scan`; null = this
    rule). Scanning saves a dispatch per step, except that XLA-CPU emits a convolution inside a
    loop body as plain loops instead of calling its convolution library: ResNet-20 trained at
    4.1 images/s scanned against 93 stepped on the 2-core CPU (docs/results.md, 3 Dec). So on
    CPU a model with XLA convolutions takes one dispatch per step; everything else scans.
    `data`: the experiment's loaded dataset (else it is loaded once more)."""
    if exp.trainer.scan is not None:
        return bool(exp.trainer.scan)
    if jax.default_backend() != "cpu":
        return True
    from experiments.sweep.vectorized import has_convolutions

    try:
        return not has_convolutions(exp, data)
    except Exception:  # noqa: BLE001 - a model that cannot be traced alone (RBM, seq2seq): the old default
        return True


def make_chunk(step: Callable, length: int) -> Callable:
    """`length` steps as one compiled program (lax.scan)."""

    def chunk(state, hp, arrays, plan, start):
        def body(s, i):
            return step(s, hp, arrays, plan, start + i), None

        return jax.lax.scan(body, state, jnp.arange(length))[0]

    return chunk


def run_chunk(state, args: tuple, start: int, n: int, step_fn: Callable, chunk_fn: Optional[Callable],
              chunk_len: int, stop: StopRequest) -> tuple[Any, int]:
    """Advance `n` steps from step `start` of the epoch: one scanned program when it is a
    full chunk and scanning is on, else one dispatch per step, stopping early on a signal.
    Returns the new state and the number of steps actually taken."""
    if chunk_fn is not None and n == chunk_len:
        return chunk_fn(state, *args, start), n
    for j in range(n):
        state = step_fn(state, *args, start + j)
        if stop:
            return state, j + 1
    return state, n


# ----------------------------------------------------------------------------- evaluation


class Evaluator:
    """Compiled evaluation of a whole split: index batches padded once to a multiple of
    the batch size, with a validity mask that the objective weighs by (`_valid`), so
    targets of any shape need no padding of their own and a last partial batch no
    recompilation."""

    def __init__(self, steps: Steps, batch_size: int, scan: bool = True, placement: Placement = Placement()):
        self.steps, self.batch_size, self.scan, self.placement = steps, batch_size, scan, placement
        self._placed: dict[int, tuple] = {}
        self._fns: dict[int, Callable] = {}

    def _compiled(self, split: Split) -> Callable:
        key = id(split)
        if key not in self._fns and not self.scan:  # one dispatch per batch (see scan_pays)
            def one(state, arrays, b, v):
                return self.steps.eval_step(state, self._batch(split, arrays, b, v))

            one = self.placement.one_at_a_time(jax.jit(one))

            def stepped(state, arrays, idx, valid):
                sums = [one(state, arrays, idx[i], valid[i]) for i in range(idx.shape[0])]
                return jax.tree.map(lambda *xs: sum(xs[1:], xs[0]), *sums)

            self._fns[key] = stepped
        if key not in self._fns:
            def evaluate(state, arrays, idx, valid):
                def body(acc, batch_idx):
                    b, v = batch_idx
                    batch = self._batch(split, arrays, b, v)
                    return jax.tree.map(jnp.add, acc, self.steps.eval_step(state, batch)), None

                first = self._batch(split, arrays, idx[0], valid[0])
                zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(self.steps.eval_step, state, first))
                return jax.lax.scan(body, zeros, (idx, valid))[0]

            self._fns[key] = self.placement.one_at_a_time(jax.jit(evaluate))
        return self._fns[key]

    def _batch(self, split: Split, arrays: dict, idx, valid) -> dict:
        return self.placement.shard_batch({**split.gather(arrays, idx), "_valid": valid}, idx.shape[0])

    def _batches(self, split: Split) -> tuple:
        key = id(split)
        if key not in self._placed:
            n = len(split)
            b = min(self.batch_size, n)
            nb = -(-n // b)
            idx = np.arange(nb * b)
            valid = (idx < n).astype(np.float32)
            idx = np.where(idx < n, idx, 0).astype(np.int32)
            self._placed[key] = self.placement.replicate((split.device_arrays(), idx.reshape(nb, b),
                                                          valid.reshape(nb, b)))
        return self._placed[key]

    def __call__(self, state: Any, split: Split) -> dict[str, float]:
        """The objective's metrics of `state` (the trainer's inner state) on `split`."""
        sums = self._compiled(split)(state, *self._batches(split))
        return self.steps.objective.finalize({k: float(v) for k, v in sums.items()})


# ----------------------------------------------------------------------------- bookkeeping


class Throughput:
    """Steady-state examples/s: full chunks after the first (which includes compilation)."""

    def __init__(self) -> None:
        self.examples, self.seconds = 0, 0.0

    def add(self, examples: int, seconds: float) -> None:
        self.examples, self.seconds = self.examples + examples, self.seconds + seconds

    @property
    def rate(self) -> Optional[float]:
        return self.examples / self.seconds if self.seconds > 0 else None


EPOCH_RECORD_KEYS = ("step", "epoch", "split", "time", "partial")  # what an epoch record holds besides metrics


class History:
    """Best and last validation metrics, rebuilt from metrics.jsonl on resume."""

    def __init__(self, metric: Metric):
        self.metric = metric
        self.best_step: Optional[int] = None
        self.best_value: Optional[float] = None
        self.best_metrics: dict = {}
        self.last_val: Optional[dict] = None
        self.first_chunk_s: Optional[float] = None

    @classmethod
    def from_metrics(cls, records: list[dict], metric: Metric) -> "History":
        """The history as the epoch-end records logged it (their metrics, without the
        bookkeeping and the train_* copies)."""
        h = cls(metric)
        for r in records:
            if r.get("split") in ("val", "train_epoch") and not r.get("partial"):
                h.end_epoch(r["epoch"], r["step"], {k: v for k, v in r.items()
                                                    if k not in EPOCH_RECORD_KEYS and not k.startswith("train_")})
        return h

    def end_epoch(self, epoch: float, step: int, val: dict) -> None:
        self.last_val = val
        value = val.get(self.metric.name)
        if value is None or not np.isfinite(value):
            return
        if self.best_value is None or self.metric.better(value, self.best_value):
            self.best_step, self.best_value, self.best_metrics = step, value, {"epoch": epoch, "step": step, **val}


@dataclass
class Lane:
    """One run trained by the driver: its experiment, files, reference steps and history."""

    exp: Experiment
    run: Run
    steps: Steps  # built from the config (evaluation, initialisation, learning rate)
    history: History
    key: jax.Array
    ckpt: Optional[Checkpointer] = None
    writers: Any = None
    alive: bool = True

    def log(self, record: dict) -> None:
        self.writers.write(record)


def _summary_fields(lane: Lane, status: str, step: int, steps_per_epoch: int, scan: bool, devices: int) -> dict:
    h, objective = lane.history, lane.steps.objective
    return {"status": status, "objective": lane.exp.objective.name if lane.exp.objective else None,
            "metrics": {m.name: m.direction for m in objective.metrics}, "best_metric": h.metric.name,
            "epochs_done": step / steps_per_epoch, "steps_done": step, "steps_per_epoch": steps_per_epoch,
            "best": h.best_metrics, "final": {"val": h.last_val}, "backend": jax.default_backend(), "scan": scan,
            "first_chunk_s": h.first_chunk_s, "devices": devices}  # a batch's split: results agree up to rounding


# ----------------------------------------------------------------------------- setup


def build_steps(exp: Experiment, data: Dataset, hp: Optional[dict] = None) -> Steps:
    return TRAINERS.get(exp.trainer.name).steps(exp, data, hp)


def steps_per_epoch(exp: Experiment, data: Dataset) -> int:
    n_train, batch = len(data.train), exp.trainer.batch_size
    if batch > n_train:
        raise UserError(f"bad value for 'trainer.batch_size': {batch}; it must be between 1 and the "
                        f"training-set size ({n_train})")
    return n_train // batch  # the last partial batch is dropped; the order changes each epoch


def check_fit(steps: Steps, data: Dataset, exp: Optional[Experiment] = None) -> None:
    """Fail before training, in one line, when the model cannot take the data's inputs
    (naming the expected and given input shapes) or its outputs cannot be scored."""
    sample = data.train.sample(2)
    try:
        state = jax.eval_shape(steps.init, init_key(jax.random.key(0)), sample)
        eval_shapes = jax.eval_shape(lambda s, b: _outputs_shape(steps, s, b), state, sample)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - the model's own failure on inputs it cannot take
        raise _input_error(exp, data, sample, err) from err
    if eval_shapes is not None:
        steps.objective.check(tuple(eval_shapes.shape), {k: tuple(v.shape) for k, v in sample.items()})


def _input_error(exp: Optional[Experiment], data: Dataset, sample: dict, err: Exception) -> UserError:
    from experiments.models import MODELS

    name = exp.model.name if exp is not None else "?"
    x = sample.get("x")
    given = f"(N, {', '.join(map(str, x.shape[1:]))})" if x is not None else "?"
    dtype = f" {x.dtype}" if x is not None else ""
    expected = getattr(MODELS.get(name), "input_shape", None) if exp is not None else None
    what = f"expects inputs of shape {expected}" if expected else \
        f"fails on them ({type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]})"
    return UserError(f"model '{name}' cannot take the inputs of data '{data.name}': given{dtype} inputs of shape "
                     f"{given}, the model {what}; pick data of that shape (data=<name>) or a model for this "
                     "data (`nnrun list`)")


def _outputs_shape(steps: Steps, state, batch):
    outputs = getattr(steps, "outputs", None)
    return outputs(state, batch) if outputs else None


def initial_state(steps: Steps, key: jax.Array, data: Dataset) -> LoopState:
    """The state at step 0."""
    return state_initializer(steps, data)(key)


def state_initializer(steps: Steps, data: Dataset) -> Callable[[jax.Array], LoopState]:
    """key -> the state at step 0, compiled once (run eagerly, init would compile every
    primitive separately) and reused for every lane of a group."""
    sample = data.train.sample(2)  # a host batch of two examples: the structure every batch has

    def init(key):
        inner = steps.init(init_key(key), sample)
        sums = jax.eval_shape(steps.train_step, inner, sample, step_streams(key, jnp.zeros((), jnp.int32)))[1]
        zeros = jax.tree.map(jnp.zeros_like, sums)
        return LoopState(step=jnp.zeros((), jnp.int32), inner=inner, sums=zeros, chunk_sums=zeros,
                         first_bad_step=jnp.full((), -1, jnp.int32))

    return compiled_for_one_use(jax.jit(init))


def compiled_for_one_use(fn: Callable) -> Callable:
    """A jitted function that runs once or a few times (a run's initial state), compiled by
    XLA-CPU without its backend optimisations: initialisers (threefry, QR for orthogonal
    matrices) took 1.5-6.3 s to compile at the default level and 0.5-1.7 s this way (LeNet5,
    LSTM, ResNet-20, the GAN on the idle 2-core CPU: benchmarks/init_compile.py), for a
    program that runs for milliseconds. Values agree with the optimised program's up to the
    last bit of a float."""
    if jax.default_backend() != "cpu":
        return fn
    cache: dict = {}

    def run(*args):
        shapes = jax.tree.map(lambda a: (np.shape(a), getattr(a, "dtype", type(a))), args)
        key = repr(shapes)
        if key not in cache:
            cache[key] = fn.lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})
        return cache[key](*args)

    return run


@jax.jit
def _lane_state(state: LoopState, k: int) -> LoopState:
    return jax.tree.map(lambda a: a[k], state)


@jax.jit
def _stack(states: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


@jax.jit
def _zero_sums(state: LoopState) -> LoopState:
    zeros = jax.tree.map(jnp.zeros_like, state.sums)
    return state.replace(sums=zeros, chunk_sums=zeros)


@jax.jit
def _mark_chunk(state: LoopState) -> LoopState:
    return state.replace(chunk_sums=state.sums)


# ----------------------------------------------------------------------------- the loop


def train(exp: Experiment, run: Run, stop: StopRequest) -> dict:
    """Train one run; returns its summary fields."""
    return train_lanes([exp], [run], stop)[0]


def train_lanes(exps: list[Experiment], runs: list[Run], stop: StopRequest,
                on_failure: Optional[Callable[[int, Exception], None]] = None) -> list[Optional[dict]]:
    """Train one run, or (with several experiments) a vectorised group: one vmapped
    program over stacked states. A lane whose loss turns non-finite fails alone
    (`on_failure(k, error)`); a single run raises instead. Returns each lane's summary
    fields (None for a failed lane)."""
    vectorized = len(exps) > 1
    t = exps[0].trainer
    placement = Placement(batch_mesh(t.devices, t.batch_size, vectorized))
    entry = TRAINERS.get(t.name)
    data = load_dataset(exps[0].data)
    spe = steps_per_epoch(exps[0], data)
    total_steps = spe * t.epochs if t.max_steps is None else min(spe * t.epochs, t.max_steps)
    lanes = []
    for exp, run in zip(exps, runs):
        steps = build_steps(exp, data)
        lanes.append(Lane(exp, run, steps, History(best_metric(exp, steps.objective)), jax.random.key(exp.seed)))
    ref = lanes[0].steps
    check_fit(ref, data, exps[0])

    # ---- the compiled step: the reference steps for one run; per-lane traced values when vmapped
    if vectorized:
        hp = entry.hyperparameters(exps, [lane.steps for lane in lanes], total_steps)
        hp["key"] = jnp.stack([lane.key for lane in lanes])
        step = make_step(lambda h: build_steps(exps[0], data, h), data.train, t.batch_size, exps[0].data.augment)
        step = jax.vmap(step, in_axes=(0, 0, None, 0, None))
    else:
        hp = {"key": lanes[0].key}
        step = make_step(lambda h: ref, data.train, t.batch_size, exps[0].data.augment, placement)
    step_fn = placement.one_at_a_time(jax.jit(step, donate_argnums=0))
    scan = scan_pays(exps[0], data)
    chunk_fn = placement.one_at_a_time(jax.jit(make_chunk(step, t.log_every), donate_argnums=0)) if scan else None
    lane_state = (lambda s, k: _lane_state(s, k)) if vectorized else (lambda s, k: s)
    evaluator = Evaluator(ref, t.eval_batch_size, scan, placement)

    with _LaneFiles(lanes, t):
        # ---- initial state, or the one restored for resume
        init = state_initializer(ref, data)  # the reference steps serve all: init reads no traced value
        states = [init(lane.key) for lane in lanes]
        if exps[0].resume:
            states[0] = _restore_for_resume(lanes[0], states[0])
        state = placement.replicate(_stack(states) if vectorized else states[0])
        arrays, hp = placement.replicate((data.train.device_arrays(), hp))

        step_i = int(states[0].step)
        start_epoch, start_i = divmod(step_i, spe)
        status = "completed"
        progress = TrainProgress(t.epochs, spe, [ref.objective.primary.name], enabled=t.progress)
        steady = Throughput()
        with progress:
            for epoch in range(start_epoch, t.epochs):
                if step_i >= total_steps or not any(lane.alive for lane in lanes):
                    break
                plans = [epoch_plan(lane.key, epoch, len(data.train), data.train) for lane in lanes]
                plan = placement.replicate(_stack(plans) if vectorized else plans[0])
                i = start_i if epoch == start_epoch else 0
                if i == 0:
                    state = _zero_sums(state)
                prev = _host_sums(state.chunk_sums, vectorized)
                sums = _host_sums(state.sums, vectorized)
                while i < spe and step_i < total_steps and not stop:
                    # chunks are aligned within the epoch, so a resumed run logs the same records
                    n = min(t.log_every - i % t.log_every, spe - i, total_steps - step_i)
                    chunk_start = time.perf_counter()
                    state, n = run_chunk(state, (hp, arrays, plan), i, n, step_fn, chunk_fn, t.log_every, stop)
                    sums = _host_sums(state.sums, vectorized)  # the one host sync per chunk
                    elapsed = time.perf_counter() - chunk_start
                    i, step_i = i + n, step_i + n
                    _fail_diverged(lanes, state, vectorized, on_failure)
                    cut = i % t.log_every != 0 and i != spe  # a stop or a max_steps cap inside a chunk
                    shown = [_log_chunk(lane, ref.objective, sums[k], prev[k], elapsed, n * t.batch_size, step_i,
                                        epoch + i / spe, cut)
                             for k, lane in enumerate(lanes) if lane.alive]
                    if not cut:
                        state, prev = _mark_chunk(state), sums
                    if shown:  # the lanes' mean metrics and their total throughput
                        ips = shown[0][1] and sum(s[1] for s in shown)
                        if ips and n == t.log_every:  # full chunks only: a short tail is dispatched step by step
                            steady.add(n * t.batch_size * len(shown), elapsed)
                        ips = steady.rate or ips
                        progress.update(epoch, i, {m: float(np.mean([s[0][m] for s in shown])) for m in shown[0][0]},
                                        ips)
                epoch_done = epoch + i / spe
                finished = step_i >= total_steps
                # an epoch ends here, or a partial one when trainer.max_steps ends the run early;
                # a stop during an epoch's last chunk still validates it, as the uninterrupted run does
                if i == spe or finished:
                    periodic = finished or (epoch + 1) % t.checkpoint_every == 0
                    vals = [_end_epoch(lane, lane_state(state, k), sums[k], epoch_done, step_i, data, evaluator,
                                       placement, is_partial=i < spe, periodic=periodic)
                            for k, lane in enumerate(lanes) if lane.alive]
                    progress.end_epoch(epoch + 1, vals[0] if len(vals) == 1 else None)
                if stop and not finished:
                    status = "interrupted"
                    for k, lane in enumerate(lanes):
                        if lane.alive:
                            lane.ckpt.save("last", step_i, lane_state(state, k))
                    break
                if i < spe:
                    break

        results: list[Optional[dict]] = []
        for k, lane in enumerate(lanes):
            if not lane.alive:
                results.append(None)
                continue
            result = _summary_fields(lane, status, step_i, spe, scan, placement.devices)
            result["examples_per_s"] = steady.rate and steady.rate / len(lanes)  # steady state, per run
            if status == "completed":
                chosen, tests = _test_results(lane, lane_state(state, k), step_i, data, evaluator)
                result.update(tests)
                if lane.exp.trainer.plots:  # the figures show the parameters that `test` scores
                    _draw_figures_quietly(lane, placement.gather(chosen.inner), data)
            else:
                result["interrupted_by"] = stop.name
            results.append(result)
        return results


def _test_results(lane: Lane, state: LoopState, step: int, data: Dataset,
                  evaluator: Evaluator) -> tuple[LoopState, dict]:
    """The test split on the best checkpoint (what `nnrun eval` reports), and on the last
    parameters as `test_last`; `test_from` says which checkpoint `test` is (the last one
    when no best was saved, e.g. no finite validation metric). Returns the state `test`
    scored, and the summary fields."""
    last = evaluator(state.inner, data.test)
    best_step = lane.ckpt.latest_step("best")
    if best_step is None:
        return state, {"test": last, "test_from": {"checkpoint": "last", "step": step}, "test_last": last}
    best_state = state if best_step == step else lane.ckpt.restore("best", state)[0]
    best = last if best_step == step else evaluator(best_state.inner, data.test)
    return best_state, {"test": best, "test_from": {"checkpoint": "best", "step": best_step}, "test_last": last}


def _draw_figures_quietly(lane: Lane, state: Any, data: Dataset) -> None:
    """Figures are a convenience: a drawing problem must never turn a run into a failure."""
    try:
        from experiments.figures import draw_figures

        draw_figures(lane.exp, lane.steps, state, data, lane.run.plots_dir)
    except Exception as err:  # noqa: BLE001
        import logging

        logging.getLogger("nnrun").warning("could not draw figures: %s", err)


class _LaneFiles:
    """Opens each lane's checkpointer and metric writers; closes them all, on errors too."""

    def __init__(self, lanes: list[Lane], trainer: Any):
        self.lanes, self.trainer = lanes, trainer

    def __enter__(self) -> "_LaneFiles":
        for lane in self.lanes:
            lane.ckpt = Checkpointer(lane.run.checkpoint_dir, keep=self.trainer.keep)
            lane.writers = open_writers(lane.run, self.trainer.writers)
        return self

    def __exit__(self, *exc) -> None:
        for lane in self.lanes:
            for closeable in (lane.ckpt, lane.writers):
                if closeable is not None:
                    closeable.close()


def _host_sums(sums: dict, vectorized: bool) -> list[dict]:
    """Each lane's sums as host floats."""
    sums = jax.device_get(sums)
    if not vectorized:
        return [{k: float(v) for k, v in sums.items()}]
    size = len(next(iter(sums.values())))
    return [{k: float(v[j]) for k, v in sums.items()} for j in range(size)]


def _fail_diverged(lanes: list[Lane], state: LoopState, vectorized: bool, on_failure) -> None:
    bad = np.atleast_1d(np.asarray(state.first_bad_step))
    for k, lane in enumerate(lanes):
        if lane.alive and bad[k] >= 0:
            err = NonFiniteLossError(int(bad[k]), float("nan"))
            if not vectorized or on_failure is None:
                raise err
            lane.alive = False
            on_failure(k, err)


def _log_chunk(lane: Lane, objective: Objective, sums: dict, prev: dict, elapsed: float, examples: int,
               step: int, epoch: float, cut: bool) -> tuple[dict, Optional[float]]:
    """Append a chunk's train record; returns its metrics and examples/s."""
    metrics = objective.finalize({k: sums[k] - prev.get(k, 0.0) for k in sums})
    # the first chunk includes compilation, so it reports no throughput
    ips = examples / elapsed if lane.history.first_chunk_s is not None else None
    if lane.history.first_chunk_s is None:
        lane.history.first_chunk_s = elapsed
    lr = lane.steps.learning_rate(step - 1)
    lane.log({"step": step, "epoch": epoch, "split": "train", **metrics, **({"lr": lr} if lr is not None else {}),
              "examples_per_s": ips, "time": time.time(), **({"partial": True} if cut else {})})
    return metrics, ips


def _end_epoch(lane: Lane, state: LoopState, sums: dict, epoch_done: float, step: int, data: Dataset,
               evaluator: Evaluator, placement: Placement, is_partial: bool, periodic: bool) -> Optional[dict]:
    """Validate, log the epoch, and save the `last` (if `periodic`) and `best` checkpoints.
    Returns the validation metrics (None without a validation split)."""
    train_metrics = lane.steps.objective.finalize(sums)
    val = evaluator(state.inner, data.val) if data.val is not None else None
    # a trainer's own epoch-end measures (a GAN's sample grid and Frechet distance) join the record
    end_epoch = getattr(lane.steps, "end_epoch", None)
    extra = end_epoch(placement.gather(state.inner), epoch_done, lane.run) if end_epoch is not None else {}
    val = {**val, **extra} if val else val
    record = {"step": step, "epoch": epoch_done, "split": "val" if val else "train_epoch",
              **(val or {**train_metrics, **extra}),
              **{f"train_{k}": v for k, v in train_metrics.items()}, "time": time.time()}
    if is_partial:  # a max_steps cap: not an epoch an uninterrupted, uncapped run would validate
        record["partial"] = True
    lane.log(record)
    lane.history.end_epoch(epoch_done, step, val or {**train_metrics, **extra})
    # best before last: a kill between the two then resumes from the older `last` and
    # replays this epoch (re-saving nothing), instead of leaving `best` an epoch behind
    if lane.history.best_step == step:
        lane.ckpt.save("best", step, state)
    if periodic:
        lane.ckpt.save("last", step, state)
    return val


def _restore_for_resume(lane: Lane, state: LoopState) -> LoopState:
    ckpt, run = lane.ckpt, lane.run
    if ckpt.latest_step("last") is None:
        raise UserError(f"cannot resume {run.dir}: it has no checkpoint in checkpoints/last; start a new run instead")
    state, step = ckpt.restore("last", state)
    lane.history = History.from_metrics(run.truncate_metrics(step), lane.history.metric)
    return state


# ----------------------------------------------------------------------------- eval of a saved run


def evaluate_run(exp: Experiment, run_dir: Path, split: str = "test", which: str = "best") -> dict:
    """Rebuild the model from a run's config, restore a checkpoint, evaluate one split."""
    data = load_dataset(exp.data)
    chosen = data.split(split)
    steps = build_steps(exp, data)
    with Checkpointer(Path(run_dir) / "checkpoints") as ckpt:
        state, step = ckpt.restore(which, initial_state(steps, jax.random.key(exp.seed), data))
    metrics = Evaluator(steps, exp.trainer.eval_batch_size, scan_pays(exp, data))(state.inner, chosen)
    return {"split": split, "checkpoint": which, "step": step, **metrics}
