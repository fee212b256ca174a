"""A synthetic time series for one-step forecasting, the course's recurrent example:
f(t) = t*sin(t)/3 + 2*sin(5t), sampled every `dt` on [0, t_max) with Gaussian noise.

Each example is a window of `window` points; its target is the next point. To keep
the splits apart, the series is cut into `blocks` contiguous blocks, shuffled with
`split_seed`, and each block goes to test, validation or training; a window never
crosses a block's edge. Values are standardised with the training blocks' mean and
standard deviation, so RMSE is in units of the training series' spread.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.data import DataConfig, Dataset, Windows, register_dataset
from experiments.errors import UserError


@dataclass
class SyntheticSeriesConfig(DataConfig):
    name: str = "synthetic_series"
    val_size: int = 2  # blocks held out for validation (this dataset counts blocks, not examples)
    test_blocks: int = 2
    blocks: int = 12
    t_max: float = 60.0
    dt: float = 0.05
    noise: float = 0.1  # std of the noise added to every sample
    window: int = 40  # input points per example; the target is the point after them
    split_seed: int = 0  # which blocks go to which split
    noise_seed: int = 0


def series(cfg: SyntheticSeriesConfig) -> tuple[np.ndarray, np.ndarray]:
    """(t, f(t) + noise) as float32 arrays."""
    t = np.arange(0.0, cfg.t_max, cfg.dt)
    clean = t * np.sin(t) / 3 + 2 * np.sin(5 * t)
    noisy = clean + np.random.default_rng(cfg.noise_seed).normal(0.0, cfg.noise, t.shape)
    return t.astype(np.float32), noisy.astype(np.float32)


@register_dataset("synthetic_series", schema=SyntheticSeriesConfig)
def load(cfg: SyntheticSeriesConfig) -> Dataset:
    """t*sin(t)/3 + 2*sin(5t) with noise: windows of 40 points -> the next point (no classes)."""
    t, values = series(cfg)
    n = len(values)
    block = n // cfg.blocks
    if block <= cfg.window + 1:
        raise UserError(f"blocks of {block} points cannot hold a window of {cfg.window} and its target; "
                        "use fewer data.blocks, a smaller data.window or more points (data.t_max, data.dt)")
    held = cfg.test_blocks + cfg.val_size
    if not 0 < held < cfg.blocks:
        raise UserError(f"data.test_blocks + data.val_size = {held} must leave training blocks out of {cfg.blocks}")
    order = np.random.default_rng(cfg.split_seed).permutation(cfg.blocks)
    parts = {"test": order[:cfg.test_blocks], "val": order[cfg.test_blocks:held], "train": order[held:]}
    in_train = np.zeros(n, bool)
    for b in parts["train"]:
        in_train[b * block:(b + 1) * block] = True
    mean, std = values[in_train].mean(), values[in_train].std()
    standard = ((values - mean) / std).astype(np.float32)[:, None]  # (time, 1 feature)

    def windows(blocks: np.ndarray) -> Windows:
        starts = np.concatenate([b * block + np.arange(block - cfg.window) for b in np.sort(blocks)])
        return Windows(standard, cfg.window, target="next", starts=starts)

    return Dataset(cfg.name, windows(parts["train"]), windows(parts["val"]) if cfg.val_size else None,
                   windows(parts["test"]), num_classes=None,
                   meta={"t": t, "mean": float(mean), "std": float(std), "block": block,
                         "blocks": {k: [int(b) for b in v] for k, v in parts.items()}})
