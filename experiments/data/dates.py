"""Dates written in words -> ISO dates, generated on the fly: an encoder-decoder task
("the 3rd of March 1998" -> "1998-03-03").

Sources are characters (several surface forms: "the 3rd of March 1998", "March 3, 1998",
"3 March 1998", "Tuesday, March 3, 1998", "3rd Mar 1998", "mar 3 1998", "1998 March 3");
targets are the ISO characters followed by an end-of-sequence token, so a decoder stops
by itself. Every calendar date in [min_year, max_year] is shuffled once (`seed`); the
test dates come first, then validation, then training, so no held-out *date* is ever
seen in training, in any form. `mask` marks the target steps up to and including the end.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from experiments.data import DataConfig, Dataset, Split, register_dataset
from experiments.errors import UserError

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SOURCE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,"
TARGET_CHARS = "0123456789-"
PAD, BOS, EOS = 0, 1, 2  # target tokens; then TARGET_CHARS from 3 (source: PAD 0, chars from 1)
TARGET_LENGTH = len("1998-03-03") + 1  # the ISO characters and the end token


def ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


FORMS = (
    lambda d: f"the {ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{ordinal(d.day)} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3].lower()} {d.day} {d.year}",
    lambda d: f"{d.year} {MONTHS[d.month - 1]} {d.day}",
)


@dataclass
class DatesConfig(DataConfig):
    name: str = "dates"
    train_size: int = 20000
    val_size: int = 1000
    test_size: int = 2000
    min_year: int = 1900
    max_year: int = 2099
    seed: int = 0  # which dates go to which split, and the surface forms drawn

    def __post_init__(self) -> None:
        if not 1 <= self.min_year <= self.max_year <= 9999:
            raise UserError(f"data.min_year={self.min_year}, data.max_year={self.max_year}: "
                            "need 1 <= min_year <= max_year <= 9999 (four-digit ISO years)")
        for key in ("train_size", "test_size"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'data.{key}': {getattr(self, key)}; it must be >= 1")
        if self.val_size < 0:
            raise UserError(f"bad value for 'data.val_size': {self.val_size}; it must be >= 0")


def encode_source(texts: list[str], width: int) -> np.ndarray:
    index = {c: i + 1 for i, c in enumerate(SOURCE_CHARS)}
    out = np.zeros((len(texts), width), np.int32)
    for i, text in enumerate(texts):
        out[i, :len(text)] = [index[c] for c in text]
    return out


def encode_target(dates: list[dt.date]) -> tuple[np.ndarray, np.ndarray]:
    index = {c: i + 3 for i, c in enumerate(TARGET_CHARS)}
    y = np.asarray([[index[c] for c in d.isoformat()] + [EOS] for d in dates], np.int32)
    return y, np.ones(y.shape, np.float32)


def decode_target(tokens: np.ndarray) -> str:
    """The characters of target tokens up to the end token (for reading predictions)."""
    out = []
    for t in np.asarray(tokens).tolist():
        if t == EOS or t == PAD:
            break
        out.append(TARGET_CHARS[t - 3] if t >= 3 else "?")
    return "".join(out)


def examples(dates: list[dt.date], rng: np.random.Generator, width: int) -> Split:
    texts = [FORMS[k](d) for d, k in zip(dates, rng.integers(0, len(FORMS), len(dates)))]
    y, mask = encode_target(dates)
    return Split(encode_source(texts, width), y, mask=mask)


@register_dataset("dates", schema=DatesConfig)
def load(cfg: DatesConfig) -> Dataset:
    """dates in words -> ISO dates (characters, end token), held-out dates never seen in training"""
    first, last = dt.date(cfg.min_year, 1, 1).toordinal(), dt.date(cfg.max_year, 12, 31).toordinal()
    ordinals = np.random.default_rng([cfg.seed, 0]).permutation(np.arange(first, last + 1))
    held = cfg.test_size + cfg.val_size
    if held + cfg.train_size > len(ordinals):
        raise UserError(f"{len(ordinals)} dates in {cfg.min_year}-{cfg.max_year} cannot give "
                        f"{cfg.train_size} training + {held} held-out distinct dates; "
                        "widen data.min_year/data.max_year or lower the sizes")
    date = lambda o: dt.date.fromordinal(int(o))  # noqa: E731
    width = max(len(f(dt.date(2000, 9, 27))) for f in FORMS) + 2  # the longest form, with margin
    parts = {"test": ordinals[:cfg.test_size], "val": ordinals[cfg.test_size:held],
             "train": ordinals[held:held + cfg.train_size]}
    if cfg.train_subset:
        parts["train"] = parts["train"][:cfg.train_subset]
    if cfg.test_subset:
        parts["test"] = parts["test"][:cfg.test_subset]
    splits = {k: examples([date(o) for o in v], np.random.default_rng([cfg.seed, i + 1]), width)
              for i, (k, v) in enumerate(parts.items()) if len(v)}
    return Dataset(cfg.name, splits["train"], splits.get("val"), splits["test"], num_classes=3 + len(TARGET_CHARS),
                   meta={"source_chars": SOURCE_CHARS, "target_chars": TARGET_CHARS, "source_vocab": 1 + len(SOURCE_CHARS)})
