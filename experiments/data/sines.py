"""Sine waves of random amplitude, frequency and phase, one per example, generated from
`data_seed`: the inputs and targets of the sequence-to-sequence and vector-to-sequence
structures (experiments/models/rnn.py).

- `target: shifted`: x is `length` samples, y the same samples one step later: a
  prediction at every step (seq2seq, objective `sequence` with `target: values`).
- `target: continuation`: x is the first `length` samples (the prime: one or a few steps),
  y the `horizon` samples after them (vec2seq: the model feeds its predictions back).
- `target: stream`: one long series (a sum of three sines of random amplitude, frequency
  and phase, `train_size` + `val_size` + `test_size` samples, cut in that order), the
  training part cut into `streams` parallel streams whose windows of `length` come in
  order (experiments/data/streams.py): truncated BPTT with `model.carry: true` and
  `trainer.batch_size` = `data.streams`. Validation and test windows are scored from a
  zero state each.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.data import DataConfig, Dataset, Split, register_dataset
from experiments.data.streams import StreamWindows
from experiments.errors import UserError

TARGETS = ("shifted", "continuation", "stream")


@dataclass
class SinesConfig(DataConfig):
    name: str = "sines"
    target: str = "shifted"  # shifted | continuation
    length: int = 40  # input steps
    horizon: int = 20  # target steps after the input (continuation)
    dt: float = 0.1  # time between samples
    train_size: int = 20000
    val_size: int = 1000
    test_size: int = 2000
    streams: int = 32  # parallel training streams (target: stream)
    data_seed: int = 0


def waves(n: int, steps: int, dt: float, rng: np.random.Generator) -> np.ndarray:
    """(n, steps, 1): a * sin(w t + p), a in [0.5, 1.5), w in [1, 3), p in [0, 2 pi)."""
    a, w, p = rng.uniform(0.5, 1.5, (n, 1)), rng.uniform(1.0, 3.0, (n, 1)), rng.uniform(0, 2 * np.pi, (n, 1))
    t = np.arange(steps)[None, :] * dt
    return (a * np.sin(w * t + p)).astype(np.float32)[..., None]


def examples(cfg: SinesConfig, n: int, rng: np.random.Generator) -> Split:
    if cfg.target == "shifted":
        s = waves(n, cfg.length + 1, cfg.dt, rng)
        return Split(s[:, :-1], s[:, 1:])
    s = waves(n, cfg.length + cfg.horizon, cfg.dt, rng)
    return Split(s[:, :cfg.length], s[:, cfg.length:])


@register_dataset("sines", schema=SinesConfig)
def load(cfg: SinesConfig) -> Dataset:
    """random sine waves: the next sample at every step (shifted) or the continuation after a prime"""
    if cfg.target not in TARGETS:
        raise UserError(f"bad value for 'data.target': '{cfg.target}'; allowed values: {', '.join(TARGETS)}")
    for key in ("length", "horizon", "train_size", "test_size"):
        if getattr(cfg, key) < 1:
            raise UserError(f"bad value for 'data.{key}': {getattr(cfg, key)}; it must be >= 1")
    if cfg.target == "stream":
        return stream(cfg)
    rngs = [np.random.default_rng([cfg.data_seed, k]) for k in range(3)]
    return Dataset(cfg.name, examples(cfg, cfg.train_subset or cfg.train_size, rngs[0]),
                   examples(cfg, cfg.val_size, rngs[1]) if cfg.val_size > 0 else None,
                   examples(cfg, cfg.test_subset or cfg.test_size, rngs[2]), num_classes=None)


def stream(cfg: SinesConfig) -> Dataset:
    rng = np.random.default_rng([cfg.data_seed, 3])
    n_train, n_val, n_test = cfg.train_subset or cfg.train_size, max(cfg.val_size, 0), cfg.test_subset or cfg.test_size
    series = waves(3, n_train + n_val + n_test, cfg.dt, rng).sum(0)  # (time, 1)
    train = StreamWindows(series[:n_train], cfg.length, cfg.streams)
    val = StreamWindows(series[n_train:n_train + n_val], cfg.length, 1) if n_val else None
    test = StreamWindows(series[n_train + n_val:], cfg.length, 1)
    return Dataset(cfg.name, train, val, test, num_classes=None)
