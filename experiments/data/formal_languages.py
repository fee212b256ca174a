"""Formal languages as next-symbol prediction, generated on the fly (Gers & Schmidhuber
2001; Weiss, Goldberg & Yahav 2018): a^n b^n and a^n b^n c^n.

A string is read from a start symbol `^`; the target at each step is the next symbol,
and `$` ends the string: x = ^ a..a b..b [c..c], y = a..a b..b [c..c] $. Only the
*predictable* targets are scored (`mask`), as in Gers & Schmidhuber's criterion that
Weiss et al. follow: the first `a` (n >= 1), every `b` after the first (the a-run's end
cannot be foreseen), for a^n b^n c^n every `c`, and the final `$`. A string is right when
every predictable symbol is (objective `sequence` with `by: n`: exact match per n).

Training strings have n drawn uniformly in [1, train_max_n]; validation is drawn the
same way (another seed); the test split holds every n in [1, test_max_n] once, so
`right_up_to` on it is the largest n up to which the network is right for every n.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.data import DataConfig, Dataset, Split, register_dataset
from experiments.errors import UserError

SYMBOLS = ("<pad>", "^", "a", "b", "c", "$")  # token i is SYMBOLS[i]; 0 pads
PAD, START, A, B, C, END = range(len(SYMBOLS))
LANGUAGES = {"anbn": (A, B), "anbncn": (A, B, C)}


@dataclass
class FormalLanguageConfig(DataConfig):
    name: str = "anbn"
    language: str = "anbn"  # anbn | anbncn
    train_size: int = 2000  # training strings
    val_size: int = 200  # validation strings (same distribution as training)
    train_max_n: int = 50  # training n in [1, train_max_n]
    test_max_n: int = 300  # the test split: every n in [1, test_max_n]
    seed: int = 0  # which strings are drawn

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise UserError(f"bad value for 'data.language': '{self.language}'; allowed values: {', '.join(LANGUAGES)}")
        for key in ("train_size", "train_max_n", "test_max_n"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'data.{key}': {getattr(self, key)}; it must be >= 1")
        if self.val_size < 0:
            raise UserError(f"bad value for 'data.val_size': {self.val_size}; it must be >= 0")


def string(n: int, letters: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y and the predictable-target mask of one string with count n."""
    body = np.repeat(np.asarray(letters), n)
    x = np.concatenate([[START], body])
    y = np.concatenate([body, [END]])
    predictable = np.ones(len(y), bool)
    predictable[1:n + 1] = False  # inside the a-run, and the first b: a or b may follow
    return x, y, predictable


def strings(ns: np.ndarray, letters: tuple[int, ...]) -> Split:
    """Strings of counts `ns`, padded to the longest: x, y (batch, time), mask, n."""
    width = len(letters) * int(ns.max()) + 1
    x = np.zeros((len(ns), width), np.int32)
    y = np.zeros((len(ns), width), np.int32)
    mask = np.zeros((len(ns), width), np.float32)
    for i, n in enumerate(ns):
        xi, yi, mi = string(int(n), letters)
        x[i, :len(xi)], y[i, :len(yi)], mask[i, :len(mi)] = xi, yi, mi
    return Split(x, y, mask=mask, n=np.asarray(ns, np.int32))


@register_dataset("anbn", schema=FormalLanguageConfig)
def load(cfg: FormalLanguageConfig) -> Dataset:
    """a^n b^n or a^n b^n c^n (data.language) as next-symbol prediction; test: every n up to test_max_n"""
    letters = LANGUAGES[cfg.language]
    train_rng, val_rng = (np.random.default_rng([cfg.seed, k]) for k in (0, 1))
    draw = lambda rng, k: rng.integers(1, cfg.train_max_n + 1, k)  # noqa: E731
    ns = draw(train_rng, cfg.train_size)
    if cfg.train_subset:
        ns = ns[:cfg.train_subset]
    val = strings(draw(val_rng, cfg.val_size), letters) if cfg.val_size else None
    test_ns = np.arange(1, cfg.test_max_n + 1)
    if cfg.test_subset:
        test_ns = test_ns[:cfg.test_subset]
    return Dataset(cfg.name, strings(ns, letters), val, strings(test_ns, letters), num_classes=len(SYMBOLS),
                   meta={"symbols": SYMBOLS, "language": cfg.language})
