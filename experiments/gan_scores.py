"""Judging generated images by a classifier from another nnrun run.

`Judge.load(run_dir, image_shape)` restores a trained classifier (e.g. a LeNet5 run) and
gives, for images with pixels in [0, 1], its class probabilities and its penultimate-layer
features (read with Flax's `capture_intermediates`, so the classifier itself is unchanged).
`scores` turns them into numbers:

- class shares (each class's fraction of the samples) and the share of samples classified
  with confidence >= 0.9;
- the classifier-based inception score exp(E_x KL(p(y|x) || p(y))): 10 for confident,
  evenly spread classes, 1 for a single class;
- the Frechet distance between the features' Gaussian fits and a reference set's
  (`FeatureStats`), |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2);
- a verdict that names mode collapse (few classes) instead of hiding it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from experiments.errors import UserError

CONFIDENT = 0.9
PRESENT = 0.01  # a class with less than this share of the samples counts as missing


@dataclass(frozen=True)
class FeatureStats:
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureStats":
        f = np.asarray(features, np.float64)
        return cls(f.mean(0), np.cov(f, rowvar=False))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Frechet distance of two Gaussians; the matrix square root through symmetric
    eigendecompositions (stable for the rank-deficient covariances of small samples)."""
    vals, vecs = np.linalg.eigh(a.cov)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    cross = np.linalg.eigvalsh(root_a @ b.cov @ root_a)
    trace_root = float(np.sum(np.sqrt(np.clip(cross, 0, None))))
    diff = a.mean - b.mean
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_root)


def scores(probs: np.ndarray, features: np.ndarray, reference: Optional[FeatureStats]) -> dict:
    """The numbers of one set of images (see the module doc)."""
    probs = np.asarray(probs, np.float64)
    k = probs.shape[1]
    labels = probs.argmax(1)
    shares = np.bincount(labels, minlength=k) / len(labels)
    marginal = probs.mean(0)
    kl = np.sum(probs * (np.log(probs + 1e-12) - np.log(marginal + 1e-12)), 1)
    out = {
        "inception_score": float(np.exp(kl.mean())),
        "confident_share": float(np.mean(probs.max(1) >= CONFIDENT)),
        "min_class_share": float(shares.min()),
        "classes_present": int(np.sum(shares >= PRESENT)),
        "class_share": {str(c): float(s) for c, s in enumerate(shares)},
    }
    if reference is not None:
        out["fid"] = frechet_distance(FeatureStats.of(features), reference)
    return out


def verdict(s: dict, num_classes: int) -> str:
    """One line on the spread of classes: collapse is stated, never averaged away."""
    shares = s["class_share"]
    top = max(shares, key=shares.get)
    if s["classes_present"] <= 1:
        return f"COLLAPSED: {shares[top]:.0%} of the samples are class {top}"
    if s["classes_present"] < num_classes:
        missing = [c for c, v in shares.items() if v < PRESENT]
        return f"PARTIAL COLLAPSE: classes {', '.join(missing)} are missing (< {PRESENT:.0%} of the samples)"
    return f"all {num_classes} classes present (smallest share {s['min_class_share']:.1%})"


class Judge:
    """A trained classifier run, as a function of images in [0, 1]."""

    def __init__(self, run_dir: Path, apply: Callable, normalisation: dict, num_classes: int, layer: str):
        self.run_dir, self._apply, self.num_classes, self.layer = run_dir, apply, num_classes, layer
        self.mean, self.std = float(normalisation.get("mean", 0.0)), float(normalisation.get("std", 1.0))

    @classmethod
    def load(cls, run_dir: Any, image_shape: tuple, layer: str = "F6") -> "Judge":
        """Restore the classifier of `run_dir`; one-line errors when it is missing, is not a
        classifier, takes other images or lacks the feature layer."""
        import jax

        from experiments.checkpoints import Checkpointer
        from experiments.data import load_dataset
        from experiments.runner import load_experiment
        from experiments.training.driver import build_steps, initial_state

        path = Path(str(run_dir)).expanduser()
        fix = "set trainer.classifier to a finished classifier run, e.g. outputs/lenet5/<run> from `nnrun train conf=lenet5`"
        if not path.is_dir():
            raise UserError(f"classifier run {path} does not exist; {fix}")
        exp = load_experiment(path)
        if exp.objective is None or exp.objective.name != "classification":
            what = exp.objective.name if exp.objective is not None else exp.trainer.name
            raise UserError(f"classifier run {path} is not a classifier (it was trained for '{what}'); {fix}")
        data = load_dataset(exp.data)
        if tuple(data.input_shape) != tuple(image_shape):
            raise UserError(f"classifier run {path} takes images of shape {tuple(data.input_shape)}, the GAN draws "
                            f"{tuple(image_shape)}; {fix} on data of that shape")
        steps = build_steps(exp, data)
        if not (path / "checkpoints").is_dir():
            raise UserError(f"classifier run {path} has no checkpoints/; {fix}")
        with Checkpointer(path / "checkpoints") as ckpt:
            which = "best" if ckpt.latest_step("best") is not None else "last"
            if ckpt.latest_step(which) is None:
                raise UserError(f"classifier run {path} has no saved checkpoint; {fix}")
            state, _ = ckpt.restore(which, initial_state(steps, jax.random.key(exp.seed), data))
        inner, model = state.inner, steps.model
        variables = {"params": inner.params, **inner.model_state}

        def apply(x):
            logits, inter = model.apply(variables, x, train=False, capture_intermediates=True,
                                        mutable=["intermediates"])
            return jax.nn.softmax(logits), inter["intermediates"][layer]["__call__"][0]

        judge = cls(path, jax.jit(apply), data.meta.get("normalisation", {}), int(data.num_classes or 0), layer)
        try:
            judge(np.zeros((2, *image_shape), np.float32))
        except KeyError as err:
            raise UserError(f"classifier run {path} has no layer '{layer}' to read features from; set "
                            "trainer.feature_layer to its penultimate layer's name (`nnrun show`)") from err
        return judge

    def __call__(self, images01: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and features of images with pixels in [0, 1]."""
        probs, feats = [], []
        for i in range(0, len(images01), batch):
            x = (np.asarray(images01[i:i + batch], np.float32) - self.mean) / self.std
            p, f = self._apply(x)
            probs.append(np.asarray(p))
            feats.append(np.asarray(f).reshape(len(x), -1))
        return np.concatenate(probs), np.concatenate(feats)
