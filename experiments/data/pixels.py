"""Image arrays into the splits the driver trains on: subsets, validation, normalisation.

Shared by the datasets that read images of any size and channel count (cifar10,
image_folder, arrays). The statistics of `pixels: channel | standard` come from the
training split alone (after the validation examples are carved off), so that neither
validation nor test data leaks into the inputs of training.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from experiments.data import Split, carve_validation
from experiments.errors import UserError

# channel: (x - mean_c) / std_c per channel; standard: one mean and std; unit: x / 255; none: as stored
PIXELS = ("channel", "standard", "unit", "none")


def check_pixels(value: str, allowed: tuple[str, ...] = PIXELS) -> None:
    if value not in allowed:
        raise UserError(f"bad value for 'data.pixels': '{value}'; allowed values: {', '.join(allowed)}")


def subset_size(requested: Optional[int], available: int, field: str, title: str) -> int:
    """How many leading examples to keep; None keeps all of them."""
    if requested is None:
        return available
    if not 0 < int(requested) <= available:
        raise UserError(
            f"data.{field}={requested} is out of range: {title} has {available} examples there; "
            f"choose 1..{available}, or null for all of them"
        )
    return int(requested)


def channel_stats(x: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64, one per channel or one in all) over every example and position.

    uint8 images are counted by value (a 256-bin histogram per channel): exact, and no
    float copy of the whole training set is made.
    """
    channels = x.shape[-1] if per_channel else 1
    flat = x.reshape(-1, channels)
    if x.dtype == np.uint8:
        values = np.arange(256, dtype=np.float64)
        counts = np.stack([np.bincount(flat[:, c], minlength=256) for c in range(channels)]).astype(np.float64)
        n = counts.sum(1)
        mean = counts @ values / n
        var = counts @ values**2 / n - mean**2
    else:
        mean = flat.mean(0, dtype=np.float64)
        var = flat.var(0, dtype=np.float64)
    return mean, np.sqrt(np.maximum(var, 0.0))


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 (x - mean) / std, broadcast over the last axis, without float64 temporaries."""
    out = x.astype(np.float32)
    out -= mean.astype(np.float32)
    out *= (1.0 / np.where(std > 0, std, 1.0)).astype(np.float32)  # a constant channel stays 0, not NaN
    return out


def image_splits(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 cfg: Any, title: str) -> tuple[Split, Optional[Split], Split, dict[str, Any]]:
    """Subset, carve validation, normalise by `cfg.pixels` (statistics from the training split).

    Returns the train, val and test splits and `meta["normalisation"]` ({mean, std} in the
    stored value scale, per channel for `channel`) plus `meta["background"]`: the value a
    stored 0 becomes (what a model pads with to extend the background).
    """
    n_train = subset_size(cfg.train_subset, len(train_x), "train_subset", title)
    n_test = subset_size(cfg.test_subset, len(test_x), "test_subset", title)
    train_x, train_y, test_x, test_y = train_x[:n_train], train_y[:n_train], test_x[:n_test], test_y[:n_test]
    train, val = carve_validation(train_x, train_y, int(cfg.val_size))
    mean, std = _statistics(train.x, cfg.pixels)

    def finish(split: Optional[Split]) -> Optional[Split]:
        return None if split is None else Split(normalise(split.x, mean, std), split.y.astype(np.int32))

    meta = {
        "normalisation": {"mean": _plain(mean), "std": _plain(std)},
        "background": _plain(-mean / np.where(std > 0, std, 1.0)),
    }
    return finish(train), finish(val), finish(Split(test_x, test_y)), meta


def _statistics(train_x: np.ndarray, pixels: str) -> tuple[np.ndarray, np.ndarray]:
    if pixels in ("channel", "standard"):
        return channel_stats(train_x, per_channel=pixels == "channel")
    scale = 255.0 if pixels == "unit" else 1.0
    return np.zeros(1), np.full(1, scale)


def _plain(a: np.ndarray) -> Any:
    return float(a[0]) if a.size == 1 else [float(v) for v in a]
