"""The adding problem (Hochreiter & Schmidhuber 1997): a sequence of `length` steps of two
features, a random value in [0, 1) and a marker; exactly two steps are marked. The target
is the sum of the two marked values. `marks: hochreiter` places them as the 1997 paper
does: one in the first 10 steps, the other in the first half, so both lie at least T/2
steps before the end; `marks: halves` (a later, easier variant) puts one in each half, so
the second can be close to the end and a network that only remembers recent steps gets
halfway (MSE 1/12 = 0.083). Predicting the mean (1.0) scores an
MSE of 2/12 = 0.167: the baseline a network that cannot span `length` steps stays at.

Generated deterministically from `data_seed`, so every run sees the same examples. With
`min_length`, each sequence has a random length in [min_length, length], right-padded with
zeros, and the batch carries their `lengths`: variable-length sequences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from experiments.data import DataConfig, Dataset, Split, register_dataset
from experiments.errors import UserError

MARKS = ("hochreiter", "halves")
BASELINE_MSE = 2 / 12  # variance of the sum of two U(0, 1) values


@dataclass
class AddingConfig(DataConfig):
    name: str = "adding"
    length: int = 100  # time steps T
    min_length: Optional[int] = None  # variable lengths in [min_length, length], masked; None = all `length`
    train_size: int = 50000
    val_size: int = 2000
    test_size: int = 5000
    marks: str = "hochreiter"  # hochreiter (first 10 steps + first half) | halves (one in each half)
    data_seed: int = 0


def generate(n: int, length: int, min_length: Optional[int], rng: np.random.Generator,
             marks: str = "hochreiter") -> dict[str, np.ndarray]:
    """n sequences (n, length, 2), targets (n, 1) and, for variable lengths, `lengths` (n,)."""
    lengths = rng.integers(min_length, length + 1, n) if min_length else np.full(n, length)
    values = rng.random((n, length)).astype(np.float32)
    half = lengths // 2
    if marks == "halves":  # one mark in each half of the real steps
        first = (rng.random(n) * half).astype(np.int64)
        second = half + (rng.random(n) * (lengths - half)).astype(np.int64)
    else:  # one in the first 10 steps, another (a different step) in the first half
        first = (rng.random(n) * np.minimum(10, half)).astype(np.int64)
        second = (rng.random(n) * (half - 1)).astype(np.int64)
        second = second + (second >= first)
    rows = np.arange(n)
    marks = np.zeros((n, length), np.float32)
    marks[rows, first] = marks[rows, second] = 1.0
    mask = (np.arange(length)[None, :] < lengths[:, None])
    x = np.stack([values * mask, marks], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return {"x": x, "y": y, **({"lengths": lengths.astype(np.int32)} if min_length else {})}


@register_dataset("adding", schema=AddingConfig)
def load(cfg: AddingConfig) -> Dataset:
    """the adding problem: T steps of (value, marker) -> the sum of the two marked values"""
    if cfg.length < 2:
        raise UserError(f"bad value for 'data.length': {cfg.length}; the adding problem needs >= 2 steps")
    if cfg.min_length is not None and not 2 <= cfg.min_length <= cfg.length:
        raise UserError(f"bad value for 'data.min_length': {cfg.min_length}; it must be in [2, data.length="
                        f"{cfg.length}] or null")
    if cfg.marks not in MARKS:
        raise UserError(f"bad value for 'data.marks': '{cfg.marks}'; allowed values: {', '.join(MARKS)}")
    for key in ("train_size", "test_size"):
        if getattr(cfg, key) < 1:
            raise UserError(f"bad value for 'data.{key}': {getattr(cfg, key)}; it must be >= 1")
    # one generator per split: changing one split's size never changes another split's examples
    split_rngs = [np.random.default_rng([cfg.data_seed, k]) for k in range(3)]
    train = generate(cfg.train_subset or cfg.train_size, cfg.length, cfg.min_length, split_rngs[0], cfg.marks)
    val = generate(cfg.val_size, cfg.length, cfg.min_length, split_rngs[1], cfg.marks) if cfg.val_size > 0 else None
    test = generate(cfg.test_subset or cfg.test_size, cfg.length, cfg.min_length, split_rngs[2], cfg.marks)
    return Dataset(cfg.name, Split(**train), Split(**val) if val else None, Split(**test), num_classes=None,
                   meta={"baseline_mse": BASELINE_MSE})
