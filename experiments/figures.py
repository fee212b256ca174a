"""Figures of what a trained model does, drawn into a run's plots/ after training:
one function per objective, given the model's steps, its trained state and the data.

- regression on a windowed series: plots/forecast.png, the test blocks with the one-step
  forecasts of the model and of persistence; on a real series' held-out tail
  (data/timeseries.py), the tail in the series' units with the model's, persistence's and
  seasonal naive's forecasts and their RMSE.
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

FIGURES: dict[str, dict[str, Callable[..., list[Path]]]] = {}  # objective -> {function name: function}


def figure(objective: str):
    """Register `fn(steps, state, data, out_dir) -> [paths]` for an objective (several may be)."""
    def decorator(fn):
        FIGURES.setdefault(objective, {})[fn.__name__] = fn
        return fn

    return decorator


def discover() -> None:
    """Import every `experiments/*_figures.py` module (e.g. cnn_figures.py): no central list."""
    import importlib
    import pkgutil

    import experiments

    for info in pkgutil.iter_modules(experiments.__path__):
        if info.name.endswith("_figures"):
            importlib.import_module(f"experiments.{info.name}")


def draw_figures(exp: Any, steps: Any, state: Any, data: Any, out_dir: Path) -> list[Path]:
    """The objective's figures for `state` (the trainer's inner state); [] if it has none."""
    paths: list[Path] = []
    if exp.objective is not None:
        discover()
        paths = [p for fn in FIGURES.get(exp.objective.name, {}).values() for p in fn(steps, state, data, Path(out_dir))]
    model_figures = getattr(getattr(steps, "model", None), "figures", None)  # a model's own (an RBF network's centres)
    if callable(model_figures):
        paths += model_figures(state, data, Path(out_dir))
    trainer_figures = getattr(steps, "figures", None)  # a trainer's own pictures and reports (RBM: filters, AIS)
    if callable(trainer_figures):
        paths += trainer_figures(exp, state, data, Path(out_dir))
    return paths


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
    if "test_origins" in data.meta:  # a real series' held-out tail (experiments/data/timeseries.py)
        return [tail_forecast(steps, state, data, out_dir)]
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


def tail_forecast(steps: Any, state: Any, data: Any, out_dir: Path) -> Path:
    """The held-out tail in the series' own units: the truth, and the forecasts of the model,
    persistence and (with a season of 12 in the window) seasonal naive for 1 step ahead, and
    for the last step of the horizon when it is longer."""
    meta, test = data.meta, data.test
    batch = test.sample(len(test))
    pred = _outputs(steps, state, batch).reshape(len(test), -1)
    mean, std = meta["mean"], meta["std"]
    log = meta.get("transform") == "log"
    units = lambda v: np.exp(np.asarray(v) * std + mean) if log else np.asarray(v) * std + mean  # noqa: E731
    origins, horizon = np.asarray(meta["test_origins"]), pred.shape[1]
    labels, series = meta.get("labels") or [], units(meta["series"])
    first, last = int(origins[0]), int(origins[-1]) + horizon
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    x_all = np.arange(first - meta["window"], last)
    ax.plot(x_all, series[x_all], "k.-", markersize=3, linewidth=0.6, label="series")
    ax.axvline(first - 0.5, color="tab:gray", linestyle=":")
    rmse = lambda f, h: float(np.sqrt(np.mean((f - series[origins + h]) ** 2)))  # noqa: E731
    title = []
    for h in sorted({0, horizon - 1}):
        model = units(pred[:, h])
        ax.plot(origins + h, model, "-", color="tab:red" if h == 0 else "tab:orange", label=f"model, {h + 1} ahead")
        title.append(f"{h + 1} ahead: model RMSE {rmse(model, h):.4g}, persistence {rmse(series[origins - 1], h):.4g}")
        if meta["window"] >= 12 and h < 12:
            seasonal = series[origins + h - 12]
            title[-1] += f", seasonal naive {rmse(seasonal, h):.4g}"
    ax.plot(origins, series[origins - 1], "-", color="tab:gray", alpha=0.7, label="persistence, 1 ahead")
    if labels:
        ticks = np.linspace(x_all[0], x_all[-1], 8).astype(int)
        ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=8)
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("held-out tail (series units); " + "; ".join(title), fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out_dir / "forecast.png")


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
