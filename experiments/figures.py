"""Figures of what a trained model does, drawn into a run's plots/ after training:
one function per objective, given the model's steps, its trained state and the data.

- regression on a windowed series: plots/forecast.png, the test blocks with the one-step
  forecasts of the model and of persistence.
- reconstruction of images: plots/reconstructions.png, test images above their
  reconstructions; for autoencoders also the latent space, interpolations, prior samples
  and the denoising check (generative_figures.py).

Adding one = a function registered with `@figure("<objective>")`. Learning curves are
plots.py's (they need only metrics.jsonl).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

FIGURES: dict[str, Callable[..., list[Path]]] = {}


def figure(objective: str):
    def decorator(fn):
        FIGURES[objective] = fn
        return fn

    return decorator


def draw_figures(exp: Any, steps: Any, state: Any, data: Any, out_dir: Path) -> list[Path]:
    """The objective's figures for `state` (the trainer's inner state); [] if it has none."""
    fn = FIGURES.get(exp.objective.name) if exp.objective is not None else None
    paths = fn(steps, state, data, Path(out_dir)) if fn else []
    own = getattr(steps.model, "figures", None)  # a model's own pictures (an RBF network's centres)
    return [*paths, *(own(state, data, Path(out_dir)) if callable(own) else [])]


def _outputs(steps: Any, state: Any, batch: dict) -> np.ndarray:
    import jax

    return np.asarray(jax.jit(steps.outputs)(state, batch))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@figure("regression")
def forecast(steps: Any, state: Any, data: Any, out_dir: Path) -> list[Path]:
    """One-step forecasts over the test windows, in time order, against the truth and persistence."""
    from experiments.data import Windows

    test = data.test
    if not isinstance(test, Windows) or test.target != "next" or test.series.shape[-1] != 1:
        return []
    batch = test.sample(len(test))
    pred = _outputs(steps, state, batch).reshape(-1)
    where = test.starts + test.length  # the index each forecast is for
    t = np.asarray(data.meta.get("t", np.arange(len(test.series))))[where]
    truth, persistence = batch["y"].reshape(-1), batch["x"][:, -1].reshape(-1)
    plt = _pyplot()
    breaks = np.flatnonzero(np.diff(where) != 1) + 1  # separate contiguous test blocks
    fig, axes = plt.subplots(1, len(breaks) + 1, figsize=(6 * (len(breaks) + 1), 3.6), squeeze=False)
    for ax, idx in zip(axes[0], np.split(np.arange(len(where)), breaks)):
        ax.plot(t[idx], truth[idx], "k.", markersize=3, label="series")
        ax.plot(t[idx], persistence[idx], "-", color="tab:gray", alpha=0.7, label="persistence")
        ax.plot(t[idx], pred[idx], "-", color="tab:red", label="model")
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    base = float(np.sqrt(np.mean((persistence - truth) ** 2)))
    axes[0][0].set_ylabel("value (standardised)")
    axes[0][0].legend()
    fig.suptitle(f"one-step forecasts on the test windows: RMSE {rmse:.4f}, persistence {base:.4f}")
    fig.tight_layout()
    return [_save(fig, plt, out_dir / "forecast.png")]


@figure("reconstruction")
def reconstructions(steps: Any, state: Any, data: Any, out_dir: Path, count: int = 12) -> list[Path]:
    """The first `count` test images (top row) above their reconstructions (bottom row)."""
    batch = data.test.sample(count)
    x = batch["x"]
    if x.ndim < 3:  # not images
        return []
    import jax

    recon = np.asarray(jax.jit(lambda s, b: steps.objective.recon(steps.outputs(s, b)))(state, batch)).reshape(x.shape)
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(x), figsize=(1.2 * len(x), 2.8), squeeze=False)
    for i in range(len(x)):
        for row, images in enumerate((x, recon)):
            axes[row][i].imshow(np.asarray(images[i]).squeeze(), cmap="gray")
            axes[row][i].set_xticks([])
            axes[row][i].set_yticks([])
    axes[0][0].set_ylabel("input")
    axes[1][0].set_ylabel("output")
    fig.tight_layout()
    from experiments.generative_figures import draw_autoencoder_figures

    return [_save(fig, plt, out_dir / "reconstructions.png"), *draw_autoencoder_figures(steps, state, data, out_dir)]


def _save(fig, plt, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
