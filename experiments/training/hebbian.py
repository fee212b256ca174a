"""The Hebbian trainer for Hopfield networks: store the training patterns in one shot,
then test recall from corrupted copies. Storage is not a sequence of steps, so this
trainer keeps its own procedure instead of the driver's loop, but it reports through the
same files: metric writers (metrics.jsonl), summary fields, checkpoints; no optimizer."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from experiments.checkpoints import Checkpointer
from experiments.config import Experiment
from experiments.data import load_dataset
from experiments.errors import UserError
from experiments.models import build_model, data_info
from experiments.models.hopfield import HopfieldParams
from experiments.runs import Run, StopRequest
from experiments.training import TrainerEntry, register_trainer
from experiments.writers import open_writers


@dataclass
class HopfieldTrainerConfig:
    name: str = "hebbian"
    trials: int = 8  # corrupted copies per stored pattern and condition
    progress: bool = True
    plots: bool = True


def _setup(exp: Experiment):
    dataset = load_dataset(exp.data)
    model = build_model(exp.model, data_info(dataset))
    return dataset, model


def _recall_report(exp: Experiment, model, params: HopfieldParams, dataset) -> dict:
    """Recall metrics, with the exact-recall rate of each stored pattern by name."""
    shape = tuple(dataset.meta["image_shape"])
    key = jax.random.fold_in(jax.random.key(exp.seed), 7)
    report = model.evaluate(params, dataset.test.x, shape, key, trials=exp.trainer.trials)
    names = dataset.meta.get("names") or [str(i) for i in range(len(dataset.test))]
    by_pattern = dict(zip(map(str, names), report.pop("half_by_pattern")))
    # per-pattern rates only for a handful of named patterns (not 150 random ones)
    named = {f"half.{n}.exact_recall": v for n, v in by_pattern.items()} if len(by_pattern) <= 20 else {}
    capacity = model.capacity(params, dataset.test.x, jax.random.fold_in(key, 1), exp.trainer.trials)
    return {**capacity, **report["summary"], **named}


def evaluate_run(exp: Experiment, run_dir: Path, split: str = "test", which: str = "best") -> dict:
    if split != "test":  # recall is measured on the stored patterns; there is no other split to ask for
        raise UserError(f"a Hopfield run has only the stored patterns to recall (split 'test'); "
                        f"drop --split {split}")
    dataset, model = _setup(exp)
    ckpt = Checkpointer(Path(run_dir) / "checkpoints")
    try:
        target = model.params_template()
        params, step = ckpt.restore(which, target)
    finally:
        ckpt.close()
    return {"split": split, "checkpoint": which, "step": step, **_recall_report(exp, model, type(target)(*params), dataset)}


def train(exp: Experiment, run: Run, stop: StopRequest) -> dict:
    dataset, model = _setup(exp)
    t0 = time.perf_counter()
    params = model.store(dataset.train.x)
    stored_s = time.perf_counter() - t0
    ckpt = Checkpointer(run.checkpoint_dir, keep=1)
    ckpt.save("last", 1, params)
    ckpt.save("best", 1, params)  # storage is one-shot: the only state is also the best
    ckpt.close()
    metrics = _recall_report(exp, model, params, dataset)
    writers = open_writers(run, [])
    writers.write({"step": 1, "epoch": 1, "split": "test", "patterns": len(dataset.train),
                   "units": model.num_units, "store_s": stored_s, **metrics, "time": time.time()})
    writers.close()
    if exp.trainer.plots:
        _plot_recall(run, exp, model, params, dataset)
        if hasattr(model, "restoration"):
            _plot_restoration(run, exp, model, params, dataset)
        if hasattr(model, "pictures"):  # a model's own pictures (stochastic Hopfield: escaping a spurious state)
            model.pictures(params, dataset, run.plots_dir, jax.random.fold_in(jax.random.key(exp.seed), 14))
    return {"status": "completed", "metrics": {"half.exact_recall": "max"}, "best_metric": "half.exact_recall",
            "epochs_done": 1, "steps_done": 1, "patterns": len(dataset.train), "units": model.num_units,
            "test": metrics}


def _plot_recall(run: Run, exp: Experiment, model, params, dataset) -> None:
    """plots/recall.png: the first 12 stored patterns, a half-noise copy of each, and what the
    net recalled (a capacity run stores hundreds: the picture keeps a readable size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.models.hopfield import corrupt_half

    shape = tuple(dataset.meta["image_shape"])
    pats = dataset.test.x[:12]
    keys = jax.random.split(jax.random.fold_in(jax.random.key(exp.seed), 11), len(pats))
    probes = np.stack([np.asarray(corrupt_half(p, k, shape)) for p, k in zip(pats, keys)])
    final, _, _ = model.recall(params, probes, jax.random.fold_in(jax.random.key(exp.seed), 12))
    fig, axes = plt.subplots(3, len(pats), figsize=(1.6 * len(pats), 5), squeeze=False)
    for j, row in enumerate((pats, probes, np.asarray(final))):
        for i in range(len(pats)):
            axes[j][i].imshow(np.asarray(row[i]).reshape(shape), cmap="gray_r", vmin=0, vmax=1)
            axes[j][i].set_xticks([])
            axes[j][i].set_yticks([])
        axes[j][0].set_ylabel(("stored", "half noise", "recalled")[j])
    run.plots_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(run.plots_dir / "recall.png", dpi=100)
    plt.close(fig)


def _plot_restoration(run: Run, exp: Experiment, model, params, dataset) -> None:
    """plots/restore.png (strip of frames), restore.gif and energy.png: the first stored
    pattern (the 'T' of the letters) recalled update by update from a half-noise copy."""
    from experiments.models.hopfield import corrupt_half, energy_trace
    from experiments.energy.pictures import save_restoration

    shape = tuple(dataset.meta["image_shape"])
    key = jax.random.fold_in(jax.random.key(exp.seed), 13)
    probe = corrupt_half(dataset.test.x[0], key, shape)
    states, energies = energy_trace(params, probe, jax.random.fold_in(key, 1))
    name = (dataset.meta.get("names") or ["0"])[0]
    save_restoration(states, energies, shape, run.plots_dir, title=f"recalling '{name}' from a half-noise copy")


register_trainer("hebbian", TrainerEntry(
    schema=HopfieldTrainerConfig,
    description="Hebbian storage + recall from corrupted patterns (Hopfield networks)",
    train=train,
    evaluate=evaluate_run,
    primary_metric=("half.exact_recall", "max"),
))
