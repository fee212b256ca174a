"""Binarised MNIST: the 0/1 digits that RBM likelihoods are reported on.

Read through the `mnist` loader (pixels in [0, 1]), then binarised once: `sample` draws each
pixel on with probability equal to its intensity (fixed seed, as Salakhutdinov & Murray
2008 did; comparable with published log-likelihoods), `threshold` sets pixels >= 0.5.
x keeps the image shape (N, 28, 28, 1), float32 in {0, 1}; y the labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.data import DataConfig, Dataset, Split, register_dataset
from experiments.errors import UserError

BINARIZE = ("sample", "threshold")


@dataclass
class BinarizedMnistConfig(DataConfig):
    name: str = "binarized_mnist"
    val_size: int = 10000  # the usual 50k / 10k / 10k split
    binarize: str = "sample"  # sample (stochastic, fixed seed) | threshold (>= 0.5)
    binarize_seed: int = 0

    def __post_init__(self) -> None:
        if self.binarize not in BINARIZE:
            raise UserError(f"bad value for 'data.binarize': '{self.binarize}'; allowed values: {', '.join(BINARIZE)}")


def binarize(x: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    if how == "threshold":
        return (x >= 0.5).astype(np.float32)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


@register_dataset("binarized_mnist", schema=BinarizedMnistConfig)
def load_binarized_mnist(cfg: BinarizedMnistConfig) -> Dataset:
    """MNIST digits with 0/1 pixels (stochastic or thresholded), 50k/10k/10k, for RBMs and Boltzmann machines."""
    from experiments.data.mnist import ImageDataConfig, load_mnist

    base = load_mnist(ImageDataConfig(name="mnist", root=cfg.root, val_size=cfg.val_size, train_subset=cfg.train_subset,
                                      test_subset=cfg.test_subset, pixels="unit"))
    rng = np.random.default_rng(cfg.binarize_seed)
    def split(s):
        return None if s is None else Split(binarize(s.x, cfg.binarize, rng), s.y)

    meta = {**base.meta, "image_shape": (28, 28), "binarize": cfg.binarize}
    return Dataset(cfg.name, split(base.train), split(base.val), split(base.test), num_classes=base.num_classes, meta=meta)
