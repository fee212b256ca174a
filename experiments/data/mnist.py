"""MNIST, Fashion-MNIST and sequential MNIST.

MNIST ships with the package (`experiments/data/mnist/`); Fashion-MNIST is downloaded on
first use into the user cache (see `downloads.cache_dir`). Every file is checked against its
sha256 before it is parsed.

Inputs are float32, scaled to [0, 1] and then standardised with the training set's pixel
mean and std: x = (pixels / 255 - mean) / std. Labels are int32.

Where the files come from, highest priority first:
- `data.root=DIR`: a directory holding the four files under their usual names;
- `NNRUN_MNIST_DIR` / `NNRUN_FASHION_MNIST_DIR`: the same, from the environment;
- MNIST: the packaged copy. Fashion-MNIST: the cache, filled from the mirrors in
  `NNRUN_FASHION_MNIST_MIRROR` (comma separated base URLs) or the public ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from experiments.data import DataConfig, Dataset, Split, carve_validation, register_dataset
from experiments.data.downloads import cache_dir, fetch_all, mirrors_from_env
from experiments.data.idx import read_idx_gz_cached, verify
from experiments.data.pixels import subset_size
from experiments.errors import UserError

PACKAGED_MNIST_DIR = Path(__file__).parent / "mnist"

# filename -> sha256 of the .gz file (the original published files, byte for byte).
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # canonical (Zalando)
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class _Source:
    """What differs between the MNIST-format datasets."""

    name: str  # registry name, used in messages and as the cache subfolder
    title: str  # human name for messages
    files: dict[str, str]
    dir_env: str  # environment variable naming a local copy
    mean: float  # training-set pixel mean / 255
    std: float
    class_names: tuple[str, ...]
    packaged_dir: Optional[Path] = None  # shipped with nnrun; otherwise downloaded
    mirrors: tuple[str, ...] = ()  # base URLs to download from
    mirror_env: str = ""  # environment variable that replaces `mirrors`


MNIST = _Source(
    "mnist", "MNIST", MNIST_FILES, "NNRUN_MNIST_DIR", 0.1307, 0.3081, tuple("0123456789"),
    packaged_dir=PACKAGED_MNIST_DIR,
)
FASHION_MNIST = _Source(
    "fashion_mnist", "Fashion-MNIST", FASHION_MNIST_FILES, "NNRUN_FASHION_MNIST_DIR", 0.2860, 0.3530,
    FASHION_MNIST_CLASSES, mirrors=FASHION_MNIST_MIRRORS, mirror_env="NNRUN_FASHION_MNIST_MIRROR",
)


@dataclass
class ImageDataConfig(DataConfig):
    name: str = "mnist"
    pixels: str = "standard"  # standard: (pixel/255 - mean) / std | unit: pixel/255 in [0, 1] (e.g. for BCE)

    def __post_init__(self) -> None:
        if self.pixels not in ("standard", "unit"):
            raise UserError(f"bad value for 'data.pixels': '{self.pixels}'; allowed values: standard, unit")


@register_dataset("mnist", schema=ImageDataConfig)
def load_mnist(cfg: Any) -> Dataset:
    """MNIST handwritten digits: 60k train / 10k test 28x28x1 images, 10 classes (packaged)."""
    return _build(MNIST, cfg, _raw_arrays(MNIST, cfg), sequence=False)


@register_dataset("fashion_mnist", schema=ImageDataConfig)
def load_fashion_mnist(cfg: Any) -> Dataset:
    """Fashion-MNIST (Zalando): 60k train / 10k test 28x28x1 clothing images, 10 classes (downloaded once)."""
    return _build(FASHION_MNIST, cfg, _raw_arrays(FASHION_MNIST, cfg), sequence=False)


@register_dataset("mnist_seq", schema=ImageDataConfig)
def load_mnist_seq(cfg: Any) -> Dataset:
    """MNIST as sequences: each image is 28 time steps (rows) of 28 features, shape (28, 28)."""
    return _build(MNIST, cfg, _raw_arrays(MNIST, cfg), sequence=True)


# ---------------------------------------------------------------------------- locating files


def _local_dir(source: _Source, cfg: Any) -> Optional[tuple[Path, str]]:
    """The user's own copy, if one is configured: (directory, where the setting came from)."""
    if cfg.root:
        return Path(str(cfg.root)).expanduser(), f"data.root={cfg.root}"
    if os.environ.get(source.dir_env):
        return Path(os.environ[source.dir_env]).expanduser(), f"{source.dir_env}={os.environ[source.dir_env]}"
    return None


def _verified_paths(source: _Source, directory: Path, fix: str) -> dict[str, Path]:
    """Check every file of `source` in `directory`; the first bad one raises with `fix`."""
    paths = {name: directory / name for name in source.files}
    for name, path in paths.items():
        verify(path, source.files[name], fix=fix)
    return paths


def _locate(source: _Source, cfg: Any) -> dict[str, Path]:
    """Paths of the four verified files, from a local copy, the package or the download cache."""
    names = ", ".join(source.files)
    local = _local_dir(source, cfg)
    if local is not None:
        directory, setting = local
        fix = f"put the original {source.title} files ({names}) in {directory}, or unset {setting}"
        return _verified_paths(source, directory, fix)
    if source.packaged_dir is not None:
        fix = (
            f"reinstall nnrun, or set data.root=DIR (or {source.dir_env}) "
            f"to a directory holding the original {names}"
        )
        return _verified_paths(source, source.packaged_dir, fix)
    mirrors = mirrors_from_env(source.mirror_env, source.mirrors)
    hint = f"or set {source.dir_env}=DIR; {source.mirror_env} overrides the download URLs"
    return fetch_all(source.files, mirrors, cache_dir(source.name), hint=hint)


def _raw_arrays(source: _Source, cfg: Any) -> dict[str, np.ndarray]:
    """uint8 arrays keyed train_x, train_y, test_x, test_y (parsed once per process)."""
    paths = _locate(source, cfg)
    return {
        "train_x": read_idx_gz_cached(paths["train-images-idx3-ubyte.gz"]),
        "train_y": read_idx_gz_cached(paths["train-labels-idx1-ubyte.gz"]),
        "test_x": read_idx_gz_cached(paths["t10k-images-idx3-ubyte.gz"]),
        "test_y": read_idx_gz_cached(paths["t10k-labels-idx1-ubyte.gz"]),
    }


# ---------------------------------------------------------------------------- building splits


def _build(source: _Source, cfg: Any, raw: dict[str, np.ndarray], sequence: bool) -> Dataset:
    """Subset, normalise and split the raw arrays into a `Dataset`."""
    n_train = subset_size(cfg.train_subset, len(raw["train_x"]), "train_subset", source.title)
    n_test = subset_size(cfg.test_subset, len(raw["test_x"]), "test_subset", source.title)
    # Subset before converting to float, so that small runs do not pay for the full set.
    unit = getattr(cfg, "pixels", "standard") == "unit"
    train_x = _normalise(raw["train_x"][:n_train], source, sequence, unit)
    test_x = _normalise(raw["test_x"][:n_test], source, sequence, unit)
    train_y = raw["train_y"][:n_train].astype(np.int32)
    test_y = raw["test_y"][:n_test].astype(np.int32)
    train, val = carve_validation(train_x, train_y, int(cfg.val_size))
    meta = {
        "class_names": list(source.class_names),
        "normalisation": {"mean": 0.0, "std": 1.0} if unit else {"mean": source.mean, "std": source.std},
        "layout": "sequence (time, features)" if sequence else "image (height, width, channels)",
        # the value of a blank (raw 0) pixel: what a model pads with to extend the background
        "background": 0.0 if unit else -source.mean / source.std,
    }
    return Dataset(cfg.name, train, val, Split(test_x, test_y), num_classes=10, meta=meta)


def _normalise(images: np.ndarray, source: _Source, sequence: bool, unit: bool = False) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (pixels/255 - mean)/std (or pixels/255 if `unit`), with a
    channel axis unless `sequence`."""
    x = images.astype(np.float32)
    # In place, as one scale and one shift: no float64 or extra full-size temporaries.
    if unit:
        x *= np.float32(1.0 / 255.0)
        return x if sequence else x[..., None]
    x *= np.float32(1.0 / (255.0 * source.std))
    x -= np.float32(source.mean / source.std)
    return x if sequence else x[..., None]
