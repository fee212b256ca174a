"""Datasets: a registry of loaders that return in-memory splits of named arrays.

Adding a dataset = one module in this package that calls `register_dataset`, plus one
YAML file in `conf/data/`. Loaders return numpy arrays; moving them to the device and
cutting batches there is the training driver's job (experiments/training/driver.py).

A batch is a dict of arrays. Two kinds of split produce them:
- `Split`: examples stored one per row (`x`, and `y` or any other named target).
- `Windows`: one long sequence; example i is the window starting at i*stride (plus a
  random phase each epoch), cut on the device when the batch is gathered, so that no
  window is ever materialised on the host.
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
    # on-device augmentation of training batches, in order: [{name: random_crop, padding: 4}, {name: flip_lr}]
    augment: list[dict[str, Any]] = field(default_factory=list)


class Split:
    """Examples stored one per row: `x` (inputs) and any named targets (`y`, masks, ...)."""

    def __init__(self, x: np.ndarray, y: Optional[np.ndarray] = None, **arrays: np.ndarray):
        self.arrays: dict[str, np.ndarray] = {"x": x, **({"y": y} if y is not None else {}), **arrays}
        n = {len(a) for a in self.arrays.values()}
        if len(n) != 1:
            raise ValueError(f"split arrays differ in length: { {k: len(a) for k, a in self.arrays.items()} }")

    @property
    def x(self) -> np.ndarray:
        return self.arrays["x"]

    @property
    def y(self) -> Optional[np.ndarray]:
        return self.arrays.get("y")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    # -- what the driver uses: arrays to place on the device, and a pure gather of a batch
    def device_arrays(self) -> dict[str, np.ndarray]:
        return self.arrays

    def gather(self, arrays: dict, idx, phase=0) -> dict:
        """The batch of examples `idx` (traceable: runs inside the jitted step)."""
        return {k: a[idx] for k, a in arrays.items()}

    def epoch_phase(self, key) -> Any:
        return 0

    def sample(self, n: int = 2) -> dict[str, np.ndarray]:
        """The first `n` examples as a host batch: shapes and dtypes to initialise a model from."""
        return {k: a[:n] for k, a in self.arrays.items()}


class Windows(Split):
    """Windows of one long sequence `series` (time first), cut when a batch is gathered.

    Example i starts at starts[i] + phase. By default starts are 0, stride, 2*stride, ...
    and the phase is drawn each training epoch in [0, stride) (0 when evaluating), so over
    epochs every offset is seen; explicit `starts` (e.g. only windows inside the blocks of
    a split) take no phase. Its input `x` is `length` steps; its target `y` is the step
    after the window (`target="next"`, a single prediction at the end) or the window
    shifted by one (`target="shifted"`, a prediction at every step, as in language models).
    """

    def __init__(self, series: np.ndarray, length: int, stride: int = 1, target: str = "next",
                 starts: Optional[np.ndarray] = None):
        from experiments.errors import UserError

        if target not in ("next", "shifted"):
            raise ValueError(f"unknown window target {target!r}")
        self.series, self.length, self.target = series, int(length), target
        self.stride = 1 if starts is not None else int(stride)
        if starts is None:  # the last window and its one-step-later target fit even at the largest phase
            starts = np.arange(max(0, (len(series) - self.length) // self.stride)) * self.stride
        self.starts = np.asarray(starts, np.int32)
        if len(self.starts) < 1:
            raise UserError(f"a sequence of {len(series)} steps is too short for windows of {length} (+1 target); "
                            "use shorter windows or more data")
        if self.starts.max() + self.length >= len(series) or self.starts.min() < 0:
            raise ValueError("a window start leaves no room for its window and target")

    @property
    def arrays(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        # a host convenience (x, y for plots and scripts) that materialises every window;
        # the driver never calls it: it gathers batches from device_arrays()
        return self.sample(len(self))

    @property
    def x(self) -> np.ndarray:
        return self.arrays["x"]

    @property
    def y(self) -> np.ndarray:
        return self.arrays["y"]

    def __len__(self) -> int:
        return len(self.starts)

    def device_arrays(self) -> dict[str, np.ndarray]:
        return {"series": self.series, "starts": self.starts}

    def gather(self, arrays: dict, idx, phase=0) -> dict:
        import jax
        import jax.numpy as jnp

        series = arrays["series"]
        starts = jnp.take(arrays["starts"], idx) + phase
        x = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(series, s, self.length))(starts)
        if self.target == "next":
            y = jnp.take(series, starts + self.length, axis=0)
        else:
            y = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(series, s + 1, self.length))(starts)
        return {"x": x, "y": y}

    def epoch_phase(self, key) -> Any:
        import jax

        return jax.random.randint(key, (), 0, self.stride) if self.stride > 1 else 0

    def sample(self, n: int = 2) -> dict[str, np.ndarray]:
        starts = self.starts[:n]
        offsets = np.arange(self.length)
        x = self.series[starts[:, None] + offsets]
        y = self.series[starts + self.length] if self.target == "next" else self.series[starts[:, None] + offsets + 1]
        return {"x": x, "y": y}


@dataclass
class Dataset:
    name: str
    train: Split
    val: Optional[Split]
    test: Split
    num_classes: Optional[int] = None  # None for datasets without classes (regression, reconstruction)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.sample(1)["x"].shape[1:])

    def split(self, name: str) -> Split:
        from experiments.errors import UserError

        if name not in ("train", "val", "test"):
            raise UserError(f"unknown split '{name}'; use train, val or test")
        chosen = {"train": self.train, "val": self.val, "test": self.test}[name]
        if chosen is None:
            raise UserError(f"dataset '{self.name}' has no '{name}' split (data.val_size=0?); use train or test")
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


def carve_validation(x: np.ndarray, y: Optional[np.ndarray], val_size: int) -> tuple[Split, Optional[Split]]:
    """Split the last `val_size` training examples off as a validation set (deterministic)."""
    if val_size <= 0:
        return Split(x, y), None
    from experiments.errors import UserError

    if val_size >= len(x):
        raise UserError(
            f"data.val_size={val_size} leaves no training data ({len(x)} examples); choose a smaller data.val_size"
        )
    cut = lambda a: (a[:-val_size], a[-val_size:]) if a is not None else (None, None)  # noqa: E731
    (xt, xv), (yt, yv) = cut(x), cut(y)
    return Split(xt, yt), Split(xv, yv)


def load_dataset(cfg: Any) -> Dataset:
    """Load the dataset named by `cfg.name` (cfg already validated against its schema)."""
    return DATASETS.get(cfg.name).load(cfg)
