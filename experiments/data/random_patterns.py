"""Random binary patterns for Hopfield capacity experiments (P patterns of N {0,1} units),
and the encoder problem of Boltzmann machines (`encoder`).

Each bit is on with probability (1 + bias) / 2 (bias = mean of the bipolar bits; 0 for
the unbiased patterns of the 0.138N capacity). Drawn from `seed` with numpy, so a pattern
set is the same on every machine. meta["image_shape"] is the most square (H, W) with
H * W = N, so half-image corruption and pictures work as for glyphs.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from experiments.data import DataConfig, Dataset, register_dataset
from experiments.data.patterns import _pattern_dataset
from experiments.errors import UserError


@dataclass
class RandomPatternsConfig(DataConfig):
    name: str = "random_patterns"
    val_size: int = 0  # ignored: pattern datasets have no validation split
    N: int = 100  # units per pattern
    P: int = 10  # patterns
    alpha: Optional[float] = None  # load P/N: when set, P = round(alpha * N) (capacity sweeps over P/N and N)
    bias: float = 0.0  # mean of the bipolar bits, in (-1, 1): P(bit on) = (1 + bias) / 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.N < 2:
            raise UserError(f"data.N={self.N} must be at least 2 units")
        if self.alpha is not None:
            if not 0 < float(self.alpha) <= 100:
                raise UserError(f"data.alpha={self.alpha} is the load P/N: it must lie in (0, 100]")
            self.P = max(1, round(float(self.alpha) * self.N))
        if self.P < 1:
            raise UserError(f"data.P={self.P} must be at least 1 pattern")
        if not -1.0 < float(self.bias) < 1.0:
            raise UserError(f"data.bias={self.bias} must lie strictly between -1 and 1 (0 = unbiased)")


def available_memory() -> int:
    """Bytes the system can still give this process (MemAvailable; physical memory otherwise)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(p: int, n: int, what: str = "data") -> None:
    """UserError if P x N patterns and the N x N weights (float32, with recall's working
    copies) cannot fit in memory: fail in a line instead of swapping or being killed."""
    need = 4 * (3 * p * n + 2 * n * n)
    have = available_memory()
    if need > have:
        raise UserError(f"{what}.P={p} patterns of N={n} units need about {need / 2**30:.1f} GiB, more than the "
                        f"{have / 2**30:.1f} GiB available; lower {what}.P or {what}.N")


def square_shape(n: int) -> tuple[int, int]:
    h = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return h, n // h


@register_dataset("random_patterns", schema=RandomPatternsConfig)
def load_random_patterns(cfg: RandomPatternsConfig) -> Dataset:
    """P random {0,1} patterns of N units (bias, seed) for Hopfield capacity experiments."""
    p, n = int(cfg.P), int(cfg.N)
    check_fits(p, n)
    rng = np.random.default_rng(int(cfg.seed))
    x = (rng.random((p, n), dtype=np.float32) < (1.0 + float(cfg.bias)) / 2).astype(np.float32)
    return _pattern_dataset("random_patterns", x.reshape(p, *square_shape(n)), [str(i) for i in range(p)])


@dataclass
class EncoderConfig(DataConfig):
    """Config of the `encoder` dataset: n one-hot patterns on an input and an output group."""

    name: str = "encoder"
    val_size: int = 0  # ignored: every split holds the same n patterns
    n: int = 4  # units per group (the 4-2-4 encoder: n = 4)
    repeats: int = 50  # copies of the n patterns in the training split (steps per epoch = n*repeats/batch)

    def __post_init__(self) -> None:
        if self.n < 2:
            raise UserError(f"data.n={self.n} must be at least 2")
        if self.repeats < 1:
            raise UserError(f"data.repeats={self.repeats} must be at least 1")


@register_dataset("encoder", schema=EncoderConfig)
def load_encoder(cfg: EncoderConfig) -> Dataset:
    """The n-log2(n)-n encoder (Ackley, Hinton & Sejnowski 1985): x = [one-hot i, one-hot i], 2n units."""
    from experiments.data import Split

    n = int(cfg.n)
    eye = np.eye(n, dtype=np.float32)
    x, y = np.concatenate([eye, eye], 1), np.arange(n, dtype=np.int32)
    train = Split(np.tile(x, (int(cfg.repeats), 1)), np.tile(y, int(cfg.repeats)))
    return Dataset("encoder", train, Split(x.copy(), y.copy()), Split(x.copy(), y.copy()), num_classes=n,
                   meta={"groups": 2})
