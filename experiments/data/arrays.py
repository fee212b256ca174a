"""`data=arrays data.path=FILE.npz`: train on the user's own arrays, without writing Python.

The file (`numpy.savez(FILE, x_train=..., y_train=..., x_test=..., y_test=...)`) holds the
inputs, one example per row in any shape (images as (N, height, width, channels)), and
integer class labels 0..K-1. An optional `class_names` array names the classes. Nothing is
unpickled: object arrays are refused.

The training examples are shuffled once with a fixed seed (`data.shuffle`) before the
subset and the validation split are cut, so that a file sorted by class still gives a
validation split of every class. Inputs become float32, normalised by `data.pixels`
(none: as stored; unit: /255; standard or channel: the training split's mean and std).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from experiments.data import DataConfig, Dataset, register_dataset
from experiments.data.pixels import check_pixels, image_splits, shuffled
from experiments.errors import UserError

KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class ArraysConfig(DataConfig):
    name: str = "arrays"
    path: Optional[str] = None  # the .npz file
    val_size: Optional[int] = None  # validation examples carved from training; None = a tenth of them
    shuffle: bool = True  # shuffle the training examples once (seed 0) before subsets and validation
    pixels: str = "none"  # none | unit | standard | channel
    num_classes: Optional[int] = None  # None = the largest label + 1

    def __post_init__(self) -> None:
        check_pixels(self.pixels)


@register_dataset("arrays", schema=ArraysConfig)
def load_arrays(cfg: Any) -> Dataset:
    """Your own arrays: data.path=FILE.npz with x_train, y_train, x_test, y_test (integer labels)."""
    path = _path(cfg.path)
    arrays = _read(path)
    x_train, x_test = (_inputs(arrays[k], k, path) for k in ("x_train", "x_test"))
    y_train, y_test = (_labels(arrays[k], k, path) for k in ("y_train", "y_test"))
    for x, y, xk, yk in ((x_train, y_train, "x_train", "y_train"), (x_test, y_test, "x_test", "y_test")):
        if len(x) != len(y):
            raise UserError(f"{path}: {xk} has {len(x)} examples but {yk} has {len(y)} labels; "
                            "give one label per example")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{path}: x_train examples have shape {x_train.shape[1:]} but x_test's have "
                        f"{x_test.shape[1:]}; both need the same shape")
    num_classes = _num_classes(cfg.num_classes, y_train, y_test, path)
    if cfg.shuffle:
        x_train, y_train = shuffled(x_train, y_train)
    train, val, test, meta = image_splits(x_train, y_train, x_test, y_test, cfg, str(path))
    names = arrays.get("class_names")
    meta["class_names"] = ([str(n) for n in names] if names is not None and len(names) == num_classes
                           else [str(i) for i in range(num_classes)])
    return Dataset(cfg.name, train, val, test, num_classes=num_classes, meta=meta)


def _path(value: Optional[str]) -> Path:
    if not value:
        raise UserError("data=arrays needs the file: data.path=FILE.npz (with x_train, y_train, x_test, y_test)")
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise UserError(f"data.path={value}: {path} does not exist; give the path of your .npz file")
    return path


def _read(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file (read whole: a .npz is compressed or not, never memory-mapped)."""
    save_as = "save it with numpy.savez(FILE, x_train=..., y_train=..., x_test=..., y_test=...)"
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:  # numpy calls any other file a pickle
        raise UserError(f"{path} is not a readable .npz file ({_one_line(err)[:80]}); {save_as}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UserError(f"{path} holds one array, not named arrays; {save_as}")
    with npz:
        missing = [k for k in KEYS if k not in npz.files]
        if missing:
            raise UserError(f"{path} has no {', '.join(missing)} (it holds {', '.join(npz.files) or 'nothing'}); "
                            f"{save_as}")
        try:
            return {k: npz[k] for k in (*KEYS, "class_names") if k in npz.files}
        except ValueError:  # object arrays: loading them would mean unpickling
            raise UserError(f"{path} holds an array of Python objects, which needs pickle; "
                            "store plain numeric arrays") from None
        except (OSError, zipfile.BadZipFile, EOFError) as err:
            raise UserError(f"{path} is damaged ({_one_line(err)}); {save_as}") from None


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())


def _inputs(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.ndim < 2 or len(x) == 0:
        raise UserError(f"{path}: {key} has shape {x.shape}; it needs one example per row, (N, ...) with N >= 1 "
                        "(one number per example: reshape to (N, 1))")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise UserError(f"{path}: {key} has dtype {x.dtype}; inputs must be real numbers")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise UserError(f"{path}: {key} holds NaN or infinite values; replace them before training")
    return x


def _labels(y: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Class labels as int64: integers, or floats that are whole numbers; never negative."""
    if y.ndim != 1:
        raise UserError(f"{path}: {key} has shape {y.shape}; labels are one integer per example, shape (N,) "
                        "(one-hot labels: store their argmax)")
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and np.array_equal(y, np.round(y))):
            bad = y[~(np.isfinite(y) & (y == np.round(y)))][0]
            raise UserError(f"{path}: {key} holds the non-integer label {bad}; labels are class numbers 0..K-1")
    elif not np.issubdtype(y.dtype, np.integer) and y.dtype != bool:
        raise UserError(f"{path}: {key} has dtype {y.dtype}; labels are integer class numbers 0..K-1")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise UserError(f"{path}: {key} holds the negative label {y.min()}; labels are class numbers 0..K-1")
    return y


def _num_classes(requested: Optional[int], y_train: np.ndarray, y_test: np.ndarray, path: Path) -> int:
    largest = int(max(y_train.max(), y_test.max()))
    if requested is None:
        return max(largest + 1, 2)
    if largest >= requested:
        raise UserError(f"{path}: label {largest} does not fit data.num_classes={requested}; "
                        f"raise data.num_classes to {largest + 1} or more, or null to count the classes")
    return int(requested)
