"""Datasets: a registry of loaders that return in-memory arrays.

Adding a dataset = one module in this package that calls `register_dataset`, plus one
YAML file in `conf/data/`. Loaders return numpy arrays; moving them to the device is the
training loop's job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from experiments.registry import Registry


@dataclass
class DataConfig:
    """Fields every dataset config has. Datasets extend this with their own fields."""

    name: str = "mnist"
    root: Optional[str] = None  # directory holding the files; None = packaged copy or cache
    val_size: int = 5000  # carved from the end of the training set; 0 = no validation split
    train_subset: Optional[int] = None  # keep only the first N training examples (tests, smoke runs)
    test_subset: Optional[int] = None  # keep only the first N test examples


@dataclass
class Split:
    x: np.ndarray  # float32 inputs
    y: np.ndarray  # int32 labels (or, for pattern datasets, the clean patterns)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Dataset:
    name: str
    train: Split
    val: Optional[Split]
    test: Split
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        from experiments.errors import UserError

        chosen = {"train": self.train, "val": self.val, "test": self.test}.get(name)
        if chosen is None:
            raise UserError(f"dataset '{self.name}' has no split '{name}'; use train, val or test")
        return chosen


@dataclass(frozen=True)
class DatasetEntry:
    schema: type  # a dataclass extending DataConfig
    load: Callable[[Any], Dataset]  # (validated config) -> Dataset
    description: str


DATASETS: Registry[DatasetEntry] = Registry("dataset", __name__)


def register_dataset(name: str, schema: type = DataConfig, description: str = ""):
    """Decorator for a loader `(cfg) -> Dataset`."""

    def decorator(load: Callable[[Any], Dataset]) -> Callable[[Any], Dataset]:
        DATASETS.register(name)(DatasetEntry(schema, load, description or (load.__doc__ or "").strip()))
        return load

    return decorator


def carve_validation(x: np.ndarray, y: np.ndarray, val_size: int) -> tuple[Split, Optional[Split]]:
    """Split the last `val_size` training examples off as a validation set (deterministic)."""
    if val_size <= 0:
        return Split(x, y), None
    from experiments.errors import UserError

    if val_size >= len(x):
        raise UserError(
            f"data.val_size={val_size} leaves no training data ({len(x)} examples); choose a smaller data.val_size"
        )
    return Split(x[:-val_size], y[:-val_size]), Split(x[-val_size:], y[-val_size:])


def load_dataset(cfg: Any) -> Dataset:
    """Load the dataset named by `cfg.name` (cfg already validated against its schema)."""
    return DATASETS.get(cfg.name).load(cfg)
