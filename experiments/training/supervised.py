"""The supervised gradient loop: classifiers trained by cross-entropy with optax.

The whole dataset lives on the device; each epoch's order is a jax.random permutation;
the step is one pure, jitted function of arrays with the state buffers donated, and the
host only reads metrics back once per chunk of `log_every` steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from experiments.checkpoints import Checkpointer
from experiments.config import Experiment
from experiments.data import Dataset, Split, load_dataset
from experiments.errors import NonFiniteLossError, UserError
from experiments.models import DataInfo, build_model
from experiments.runs import Run, StopRequest
from experiments.training import register_loop
from experiments.training.optim import make_optimizer
from experiments.training.progress import TrainProgress


@dataclass
class SupervisedTrainerConfig:
    name: str = "supervised"
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    log_every: int = 100  # steps per chunk: metrics reach the host once per chunk
    # Each full chunk as one lax.scan program. Measured (benchmarks/lenet5_layouts.py,
    # lenet5_speed.py): on an H200, LeNet5 at batch 128 trained at 731k images/s scanned
    # against 464k dispatched per step; on the 2-core CPU, 11.4k against 10.4k, and
    # lstm_mnist 3.96k against 3.74k. Per-step dispatch only won for LeNet5 in the NHWC
    # layout on CPU (3.2k against 1.8k: XLA-CPU's convolutions inside a loop body).
    scan: Optional[bool] = True
    max_steps: Optional[int] = None  # stop after this many steps in total (smoke runs)
    checkpoint_every: int = 1  # epochs between periodic checkpoints
    keep: int = 3  # periodic checkpoints kept
    best_metric: str = "accuracy"  # validation metric that picks the best checkpoint (higher is better)
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        # checked at config validation, before a run directory exists
        for key in ("epochs", "batch_size", "eval_batch_size", "log_every", "checkpoint_every", "keep"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'trainer.{key}': {getattr(self, key)}; it must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"bad value for 'trainer.max_steps': {self.max_steps}; it must be >= 1 or null")
        if self.best_metric not in ("accuracy", "loss"):
            raise UserError(f"bad value for 'trainer.best_metric': '{self.best_metric}'; allowed values: accuracy, loss")
        if self.scan is None:  # configs saved before scanning became the default on every backend
            self.scan = True


class TrainState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    model_state: Any  # non-parameter collections (e.g. batch_stats); {} for most models
    opt_state: Any
    epoch_sums: jax.Array  # [loss*n, correct, n] accumulated over the current epoch
    first_bad_step: jax.Array  # first step (1-based, like `step` after it) with a non-finite loss, -1 if none


def init_state(model, tx: optax.GradientTransformation, key: jax.Array, input_shape) -> TrainState:
    variables = model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    params = variables.pop("params") if hasattr(variables, "pop") else variables["params"]
    model_state = {k: v for k, v in dict(variables).items() if k != "params"}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
        epoch_sums=jnp.zeros(3, jnp.float32),
        first_bad_step=jnp.full((), -1, jnp.int32),
    )


def make_train_step(model, tx: optax.GradientTransformation, batch_size: int, dropout_key: jax.Array) -> Callable:
    """A pure step: (state, X, Y, order, i) -> state, training on batch i of `order`."""

    def loss_fn(params, model_state, x, y, rng):
        variables = {"params": params, **model_state}
        if model_state:
            logits, new_model_state = model.apply(
                variables, x, train=True, rngs={"dropout": rng}, mutable=list(model_state)
            )
        else:
            logits, new_model_state = model.apply(variables, x, train=True, rngs={"dropout": rng}), model_state
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (logits, new_model_state)

    def train_step(state: TrainState, X, Y, order, i) -> TrainState:
        idx = jax.lax.dynamic_slice_in_dim(order, i * batch_size, batch_size)
        x, y = X[idx], Y[idx]
        rng = jax.random.fold_in(dropout_key, state.step)
        (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.model_state, x, y, rng
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == y)
        sums = state.epoch_sums + jnp.stack([loss * batch_size, correct, batch_size]).astype(jnp.float32)
        # a finite loss so large that the running sum overflows is a diverged run too
        bad = (state.first_bad_step < 0) & ~(jnp.isfinite(loss) & jnp.isfinite(sums[0]))
        return state.replace(
            step=state.step + 1,
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            epoch_sums=sums,
            first_bad_step=jnp.where(bad, state.step + 1, state.first_bad_step),  # 1-based, as in metrics.jsonl
        )

    return train_step


def make_chunk(train_step: Callable, length: int) -> Callable:
    """`length` steps as one compiled program (lax.scan)."""

    def chunk(state, X, Y, order, start):
        def body(s, i):
            return train_step(s, X, Y, order, start + i), None

        state, _ = jax.lax.scan(body, state, jnp.arange(length))
        return state

    return chunk


class Evaluator:
    """Compiled evaluation of a whole split. The split is padded once to a multiple of
    the batch size with a mask, so a last partial batch needs no recompilation."""

    def __init__(self, model, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self._batches: dict[int, tuple] = {}

        def evaluate(variables, xb, yb, mb):
            def body(acc, batch):
                x, y, m = batch
                logits = model.apply(variables, x, train=False)
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
                correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
                return acc + jnp.stack([jnp.sum(loss * m), jnp.sum(correct * m), jnp.sum(m)]), None

            acc, _ = jax.lax.scan(body, jnp.zeros(3, jnp.float32), (xb, yb, mb))
            return acc

        self._evaluate = jax.jit(evaluate)

    def _device_batches(self, split: Split) -> tuple:
        key = id(split)
        if key not in self._batches:
            n = len(split)
            b = min(self.batch_size, n)
            nb = -(-n // b)
            pad = nb * b - n
            x = np.concatenate([split.x, np.zeros((pad, *split.x.shape[1:]), split.x.dtype)])
            y = np.concatenate([split.y, np.zeros((pad,), split.y.dtype)])
            m = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
            self._batches[key] = tuple(
                jax.device_put(a.reshape(nb, b, *a.shape[1:])) for a in (x, y, m)
            )
        return self._batches[key]

    def __call__(self, variables, split: Split) -> dict[str, float]:
        loss_sum, correct, n = np.asarray(self._evaluate(variables, *self._device_batches(split)))
        return {"loss": float(loss_sum / n), "accuracy": float(correct / n)}


@dataclass
class Setup:
    """Everything built from an experiment, shared by train, eval and the benchmarks."""

    dataset: Dataset
    model: Any
    tx: optax.GradientTransformation
    lr_schedule: Callable
    steps_per_epoch: int
    key: jax.Array


def build_setup(exp: Experiment, dataset: Optional[Dataset] = None) -> Setup:
    trainer = exp.trainer
    dataset = dataset or load_dataset(exp.data)
    n_train = len(dataset.train)
    if trainer.batch_size < 1 or trainer.batch_size > n_train:
        raise UserError(
            f"bad value for 'trainer.batch_size': {trainer.batch_size}; it must be between 1 and the "
            f"training-set size ({n_train})"
        )
    steps_per_epoch = n_train // trainer.batch_size  # the last partial batch is dropped; order changes each epoch
    model = build_model(exp.model, DataInfo(dataset.input_shape, dataset.num_classes))
    tx, lr = make_optimizer(exp.optim, exp.schedule, steps_per_epoch, trainer.epochs)
    return Setup(dataset, model, tx, lr, steps_per_epoch, jax.random.key(exp.seed))


def initial_state(setup: Setup) -> TrainState:
    # jitted: run eagerly, init would compile every primitive separately (seconds on CPU)
    init = jax.jit(lambda key: init_state(setup.model, setup.tx, key, setup.dataset.input_shape))
    return init(jax.random.fold_in(setup.key, 0))


@partial(jax.jit, static_argnums=2)
def epoch_order(key: jax.Array, epoch: int, n: int) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 1), epoch), n)


def model_variables(state: TrainState) -> dict:
    return {"params": state.params, **state.model_state}


@register_loop(
    "supervised",
    schema=SupervisedTrainerConfig,
    evaluate=lambda *a, **k: evaluate_run(*a, **k),
    uses_optimizer=True,
    description="gradient descent on cross-entropy (classifiers)",
)
def train(exp: Experiment, run: Run, stop: StopRequest) -> dict:
    t = exp.trainer
    setup = build_setup(exp)
    data = setup.dataset
    backend = jax.default_backend()
    total_steps = setup.steps_per_epoch * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)

    train_step = make_train_step(setup.model, setup.tx, t.batch_size, jax.random.fold_in(setup.key, 2))
    step_fn = jax.jit(train_step, donate_argnums=0)
    chunk_fn = jax.jit(make_chunk(train_step, t.log_every), donate_argnums=0) if t.scan else None
    evaluator = Evaluator(setup.model, t.eval_batch_size)
    with Checkpointer(run.checkpoint_dir, keep=t.keep) as ckpt:
        state = initial_state(setup)
        history = History()
        if exp.resume:
            state = _restore_for_resume(ckpt, state, run)
            history = History.from_metrics(run.metrics(), t.best_metric)
        X, Y = jax.device_put(data.train.x), jax.device_put(data.train.y)
        n_train = len(data.train)

        step = int(state.step)
        start_epoch, start_i = divmod(step, setup.steps_per_epoch)
        status, progress = "completed", TrainProgress(t.epochs, setup.steps_per_epoch, enabled=t.progress)
        with progress:
            for epoch in range(start_epoch, t.epochs):
                if step >= total_steps:
                    break
                order = epoch_order(setup.key, epoch, n_train)
                i = start_i if epoch == start_epoch else 0
                if i == 0:
                    state = state.replace(epoch_sums=jnp.zeros(3, jnp.float32))
                prev_sums = np.asarray(state.epoch_sums)
                while i < setup.steps_per_epoch and step < total_steps and not stop:
                    n = min(t.log_every, setup.steps_per_epoch - i, total_steps - step)
                    chunk_start = time.perf_counter()
                    state, n = run_chunk(state, (X, Y, order), i, n, step_fn, chunk_fn, t.log_every, stop)
                    sums = np.asarray(state.epoch_sums)  # the one host sync per chunk
                    elapsed = time.perf_counter() - chunk_start
                    i, step = i + n, step + n
                    bad = int(state.first_bad_step)
                    if bad >= 0:
                        raise NonFiniteLossError(bad, float("nan"))
                    loss, acc, ips = log_chunk(run, history, sums, prev_sums, elapsed, step,
                                               epoch + i / setup.steps_per_epoch, float(setup.lr_schedule(step - 1)))
                    prev_sums = sums
                    progress.update(epoch, i, loss, acc, ips)
                if stop:
                    status = "interrupted"
                    ckpt.save("last", step, state)
                    break
                # an epoch ends here, or a partial one when trainer.max_steps stops the run early
                last_epoch = i < setup.steps_per_epoch or epoch + 1 == t.epochs or step >= total_steps
                val = end_epoch(state, sums, epoch + i / setup.steps_per_epoch, step, data, evaluator, run, history,
                                ckpt, t.best_metric, periodic=last_epoch or (epoch + 1) % t.checkpoint_every == 0)
                progress.end_epoch(epoch + 1, val)
                if i < setup.steps_per_epoch:
                    break

        result = summary_fields(status, step, setup.steps_per_epoch, history, backend, t.scan)
        if status == "completed":
            result["test"] = evaluator(model_variables(state), data.test)
        if status == "interrupted":
            result["interrupted_by"] = stop.name
        return result


def run_chunk(state, arrays: tuple, start: int, n: int, step_fn: Callable, chunk_fn: Optional[Callable],
              chunk_len: int, stop: StopRequest) -> tuple[Any, int]:
    """Advance `n` steps from step `start` of the epoch: one scanned program when it is a
    full chunk and scanning is on, else one dispatch per step, stopping early on a signal.
    Returns the new state and the number of steps actually taken."""
    if chunk_fn is not None and n == chunk_len:
        return chunk_fn(state, *arrays, start), n
    for j in range(n):
        state = step_fn(state, *arrays, start + j)
        if stop:
            return state, j + 1
    return state, n


def chunk_metrics(sums: np.ndarray, prev: np.ndarray) -> tuple[float, float, float]:
    d = sums - prev
    seen = float(d[2])
    return float(d[0] / max(seen, 1)), float(d[1] / max(seen, 1)), seen


def log_chunk(run: Run, history: History, sums: np.ndarray, prev: np.ndarray, elapsed: float, step: int,
              epoch: float, lr: float) -> tuple[float, float, Optional[float]]:
    """Append a chunk's train record to metrics.jsonl; returns its loss, accuracy and images/s."""
    loss, acc, seen = chunk_metrics(sums, prev)
    # the first chunk includes compilation, so it reports no throughput
    ips = seen / elapsed if history.first_chunk_s is not None else None
    if history.first_chunk_s is None:
        history.first_chunk_s = elapsed
    run.log_metrics({"step": step, "epoch": epoch, "split": "train", "loss": loss, "accuracy": acc, "lr": lr,
                     "images_per_s": ips, "time": time.time()})
    return loss, acc, ips


def end_epoch(state: TrainState, sums: np.ndarray, epoch_done: float, step: int, data: Dataset,
              evaluator: Evaluator, run: Run, history: History, ckpt: Checkpointer, best_metric: str,
              periodic: bool) -> Optional[dict]:
    """Validate, log the epoch, and save the `last` (if `periodic`) and `best` checkpoints.
    Returns the validation metrics (None without a validation split)."""
    epoch_loss, epoch_acc = float(sums[0] / sums[2]), float(sums[1] / sums[2])
    val = evaluator(model_variables(state), data.val) if data.val is not None else None
    run.log_metrics({"step": step, "epoch": epoch_done, "split": "val" if val else "train_epoch",
                     **(val or {"loss": epoch_loss, "accuracy": epoch_acc}),
                     "train_loss": epoch_loss, "train_accuracy": epoch_acc, "time": time.time()})
    history.end_epoch(epoch_done, step, val or {"loss": epoch_loss, "accuracy": epoch_acc}, best_metric)
    if periodic:
        ckpt.save("last", step, state)
    if history.best_step == step:
        ckpt.save("best", step, state)
    return val


def summary_fields(status: str, step: int, steps_per_epoch: int, history: History, backend: str,
                   scan: bool) -> dict:
    """The summary.json fields of a supervised run (test metrics are added by the caller)."""
    return {"status": status, "epochs_done": step / steps_per_epoch, "steps_done": step,
            "steps_per_epoch": steps_per_epoch, "best": history.best(), "final": {"val": history.last_val},
            "backend": backend, "scan": scan, "first_chunk_s": history.first_chunk_s}


def _restore_for_resume(ckpt: Checkpointer, state: TrainState, run: Run) -> TrainState:
    if ckpt.latest_step("last") is None:
        raise UserError(f"cannot resume {run.dir}: it has no checkpoint in checkpoints/last; start a new run instead")
    state, step = ckpt.restore("last", state)
    run.truncate_metrics(step)
    return state


class History:
    """Best/last validation metrics, rebuilt from metrics.jsonl on resume."""

    def __init__(self):
        self.best_step: Optional[int] = None
        self.best_value = -float("inf")
        self.best_metrics: dict = {}
        self.last_val: Optional[dict] = None
        self.first_chunk_s: Optional[float] = None

    @classmethod
    def from_metrics(cls, records: list[dict], metric: str = "accuracy") -> "History":
        h = cls()
        for r in records:
            if r.get("split") in ("val", "train_epoch"):
                h.end_epoch(r["epoch"], r["step"], {"loss": r["loss"], "accuracy": r["accuracy"]}, metric)
        return h

    def end_epoch(self, epoch: float, step: int, val: dict, metric: str) -> None:
        self.last_val = val
        value = val.get(metric, -float("inf"))
        if metric == "loss":
            value = -value
        if value > self.best_value:
            self.best_step, self.best_value, self.best_metrics = step, value, {"epoch": epoch, "step": step, **val}

    def best(self) -> dict:
        return self.best_metrics


def evaluate_run(exp: Experiment, run_dir, split: str = "test", which: str = "best") -> dict:
    """Rebuild the model from a run's config, restore a checkpoint, evaluate one split."""
    setup = build_setup(exp)
    with Checkpointer(run_dir / "checkpoints") as ckpt:
        state, step = ckpt.restore(which, initial_state(setup))
    metrics = Evaluator(setup.model, exp.trainer.eval_batch_size)(model_variables(state), setup.dataset.split(split))
    return {"split": split, "checkpoint": which, "step": step, **metrics}
