"""Figures of a trained image classifier, drawn into a run's plots/ (after training, and on
demand with `nnrun plots <run_dir>`):

- filters.png: the first convolution layer's kernels, one tile each (colour when the layer
  sees RGB; like Figure 3 of the AlexNet paper);
- feature_maps.png: one test image and, row by row, the first maps of every layer that
  outputs images (height x width x channels);
- confusion.png: the test confusion matrix (rows: true class, columns: predicted), counts;
- misclassified.png: test images the model gets wrong, with their true and predicted labels.

Each is skipped where it has no meaning (no conv layer, inputs that are not images, labels
per time step).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.figures import _pyplot, _save, figure

MAX_FILTERS, MAPS_PER_LAYER, MISCLASSIFIED, BATCH = 96, 8, 24, 500


@figure("classification")
def classifier_figures(steps: Any, state: Any, data: Any, out_dir: Path) -> list[Path]:
    test = data.test if data.test is not None else data.val
    if test is None or not hasattr(test, "arrays") or "y" not in test.arrays or test.arrays["y"].ndim != 1:
        return []
    x, y = np.asarray(test.x), np.asarray(test.arrays["y"])
    pred = predictions(steps, state, test)
    names = data.meta.get("class_names") if isinstance(getattr(data, "meta", None), dict) else None
    names = list(names) if names else [str(c) for c in range(int(max(y.max(), pred.max())) + 1)]
    paths = [confusion(y, pred, names, out_dir)]
    if x.ndim in (3, 4):
        paths.append(misclassified(x, y, pred, names, out_dir))
        paths += first_layer_filters(state.params, out_dir)
        paths += feature_maps(steps, state, x[:1], out_dir)
    return [p for p in paths if p is not None]


def predictions(steps: Any, state: Any, split: Any) -> np.ndarray:
    """Predicted classes of a whole split, in fixed-size batches (one compiled program)."""
    import jax

    outputs = jax.jit(steps.outputs)
    n, preds = len(split), []
    for start in range(0, n, BATCH):
        idx = np.arange(start, min(start + BATCH, n))
        batch = {k: v[np.pad(idx, (0, BATCH - len(idx)), mode="edge")] for k, v in split.arrays.items()}
        preds.append(np.asarray(outputs(state, batch)).argmax(-1)[: len(idx)])
    return np.concatenate(preds)


def confusion(y: np.ndarray, pred: np.ndarray, names: list[str], out_dir: Path) -> Path:
    k = len(names)
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (y.astype(int), pred.astype(int)), 1)
    plt = _pyplot()
    size = max(4.5, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(counts, cmap="Blues")
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test confusion matrix: accuracy {np.trace(counts) / max(counts.sum(), 1):.4f} "
                 f"({counts.sum():,} images)", fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out_dir / "confusion.png")


def _show(ax, img: np.ndarray) -> None:
    """An image of any range: per-image min-max scaled, grayscale or RGB."""
    img = np.asarray(img, np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    ax.imshow(img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def misclassified(x: np.ndarray, y: np.ndarray, pred: np.ndarray, names: list[str], out_dir: Path) -> Path:
    wrong = np.flatnonzero(pred != y)[:MISCLASSIFIED]
    plt = _pyplot()
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.65 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        ax.axis("on")
        _show(ax, x[i])
        ax.set_title(f"{names[int(y[i])]}\n-> {names[int(pred[i])]}", fontsize=7, color="tab:red")
    fig.suptitle(f"misclassified test images (true -> predicted): {int((pred != y).sum()):,} of {len(y):,}"
                 + (f", first {len(wrong)} shown" if len(wrong) < (pred != y).sum() else ""), fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out_dir / "misclassified.png")


def _first_kernel(params: Any) -> Any:
    """The first 4-D (height, width, in, out) kernel in the model's creation order."""
    if hasattr(params, "items"):
        for _, value in params.items():
            found = _first_kernel(value)
            if found is not None:
                return found
        return None
    return params if getattr(params, "ndim", 0) == 4 else None


def first_layer_filters(params: Any, out_dir: Path) -> list[Path]:
    kernel = _first_kernel(params)
    if kernel is None:
        return []
    k = np.asarray(kernel)[..., :MAX_FILTERS]  # (kh, kw, cin, cout)
    rgb = k.shape[2] == 3
    count = k.shape[-1]
    cols = min(16, count)
    rows = -(-count // cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(0.75 * cols, 0.75 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for f, ax in enumerate(axes.ravel()[:count]):
        _show(ax, k[..., f] if rgb else k[..., f].mean(-1))
    fig.suptitle(f"first-layer filters: {count} of {k.shape[0]}x{k.shape[1]}x{k.shape[2]}"
                 + (" (RGB)" if rgb else (" (mean over input channels)" if k.shape[2] > 1 else "")), fontsize=9)
    fig.tight_layout()
    return [_save(fig, plt, out_dir / "filters.png")]


def feature_maps(steps: Any, state: Any, x: np.ndarray, out_dir: Path) -> list[Path]:
    """The maps of each top-level layer whose output is (1, H, W, C), for one input."""
    model = steps.model
    if "layout" in getattr(model, "__dataclass_fields__", {}):
        model = model.clone(layout="NHWC")  # intermediates in (batch, height, width, channels)
    variables = {"params": state.params, **state.model_state}
    _, inter = model.apply(variables, x, train=False, mutable=["intermediates"],
                           capture_intermediates=lambda mdl, name: name == "__call__" and len(mdl.scope.path) == 1)
    layers = [(name, np.asarray(v["__call__"][0])[0]) for name, v in inter["intermediates"].items()
              if name != "__call__" and np.ndim(v["__call__"][0]) == 4]
    if not layers:
        return []
    plt = _pyplot()
    cols = MAPS_PER_LAYER + 1
    fig, axes = plt.subplots(len(layers), cols, figsize=(1.2 * cols, 1.25 * len(layers) + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, (name, maps) in zip(axes, layers):
        row[0].axis("on")
        _show(row[0], x[0])
        row[0].set_ylabel(f"{name}\n{'x'.join(map(str, maps.shape))}", fontsize=7)
        for c in range(min(MAPS_PER_LAYER, maps.shape[-1])):
            row[c + 1].axis("on")
            _show(row[c + 1], maps[..., c])
    fig.suptitle("feature maps of one test image, layer by layer (input, then the first maps)", fontsize=9)
    fig.tight_layout()
    return [_save(fig, plt, out_dir / "feature_maps.png")]
