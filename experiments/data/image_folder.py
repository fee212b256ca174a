"""`data=image_folder data.path=DIR`: train on a folder of the user's own images.

Layouts (a class is a sub-folder; its name is the class name, classes sorted by name):
- `DIR/<class>/<image>`: a test split is held out of every class (`data.test_split`, a
  fraction, drawn with a fixed seed, so the same images are test images on every run);
- `DIR/train/<class>/<image>` and `DIR/test/<class>/<image>`: the given split is used.

Every file with an image extension Pillow reads (.png, .jpg, .bmp, .gif, .tif, .webp, ...)
is an image; other files (README, .DS_Store) are skipped; an image that cannot be decoded
is an error naming it. Images are converted to RGB (`data.channels=3`) or
grayscale (1) and resized to `data.size` [height, width] (bilinear; the aspect ratio is
not kept), then normalised by `data.pixels` (default: each channel with the training split's
mean and std). The validation split is carved from the shuffled training images.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from experiments.data import DataConfig, Dataset, register_dataset
from experiments.data.pixels import check_pixels, image_splits, shuffled, subset_size
from experiments.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class ImageFolderConfig(DataConfig):
    name: str = "image_folder"
    path: Optional[str] = None  # DIR: one sub-folder per class (or train/ and test/ holding them)
    size: list[int] = field(default_factory=lambda: [32, 32])  # [height, width] every image is resized to
    channels: int = 3  # 3 = RGB, 1 = grayscale
    test_split: float = 0.2  # fraction of each class held out for test (ignored with train/ and test/)
    val_size: Optional[int] = None  # validation images carved from training; None = a tenth of them
    pixels: str = "channel"  # channel | standard | unit | none

    def __post_init__(self) -> None:
        check_pixels(self.pixels)
        if len(self.size) != 2 or min(self.size) < 1:
            raise UserError(f"bad value for 'data.size': {list(self.size)}; give [height, width], e.g. [32, 32]")
        if self.channels not in (1, 3):
            raise UserError(f"bad value for 'data.channels': {self.channels}; allowed values: 1 (grayscale), 3 (RGB)")
        if not 0.0 < self.test_split < 1.0:
            raise UserError(f"bad value for 'data.test_split': {self.test_split}; "
                            "give the fraction of each class held out for test, between 0 and 1")


@register_dataset("image_folder", schema=ImageFolderConfig)
def load_image_folder(cfg: Any) -> Dataset:
    """Your own images: data.path=DIR with one sub-folder per class (DIR/<class>/<image>)."""
    root = _root(cfg.path)
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _classes(root / "train")
        train_files, train_y = _listing(root / "train", classes)
        test_files, test_y = _listing(root / "test", classes, split="test")
    else:
        classes = _classes(root)
        files, labels = _listing(root, classes)
        train_files, train_y, test_files, test_y = _hold_out(files, labels, float(cfg.test_split))
    train_files, train_y = shuffled(np.asarray(train_files, dtype=object), train_y)
    # Decode only the images a subset keeps: a quick run on a big folder reads little.
    n_train = subset_size(cfg.train_subset, len(train_files), "train_subset", str(root))
    n_test = subset_size(cfg.test_subset, len(test_files), "test_subset", str(root))
    size, channels = (int(cfg.size[0]), int(cfg.size[1])), int(cfg.channels)
    train_x = _read_images(list(train_files[:n_train]), size, channels)
    test_x = _read_images(test_files[:n_test], size, channels)
    train, val, test, meta = image_splits(train_x, train_y[:n_train], test_x, test_y[:n_test], cfg, str(root),
                                          subset=False)
    meta.update(class_names=classes, layout="image (height, width, channels)")
    return Dataset(cfg.name, train, val, test, num_classes=len(classes), meta=meta)


# ---------------------------------------------------------------------------- listing


def _root(value: Optional[str]) -> Path:
    if not value:
        raise UserError("data=image_folder needs the folder: data.path=DIR (one sub-folder of images per class)")
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise UserError(f"data.path={value}: {root} is not a folder; give the folder that holds one "
                        "sub-folder of images per class")
    return root


def _classes(directory: Path) -> list[str]:
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"{directory} holds {len(classes)} class folder{'s' if len(classes) != 1 else ''} "
                        f"({', '.join(classes) or 'none'}); put the images of each class in their own "
                        "sub-folder, at least two classes")
    return classes


def _listing(directory: Path, classes: list[str], split: str = "train") -> tuple[list[Path], np.ndarray]:
    """Every candidate image file under directory/<class>/ (sorted), with its class index."""
    files, labels = [], []
    for index, name in enumerate(classes):
        folder = directory / name
        found = sorted(p for p in folder.rglob("*") if _is_image_name(p)) if folder.is_dir() else []
        if not found and split == "train":
            raise UserError(f"class folder {folder} holds no images; add some or remove the folder")
        files += found
        labels += [index] * len(found)
    if not files:
        raise UserError(f"{directory} holds no images; put the {split} images in its class sub-folders")
    return files, np.asarray(labels, np.int64)


def _is_image_name(path: Path) -> bool:
    """A visible file with an extension Pillow reads (.png, .jpg, ...): READMEs and the like are skipped."""
    from PIL import Image

    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in Image.registered_extensions()


def _hold_out(files: list[Path], labels: np.ndarray, fraction: float):
    """Hold `fraction` of every class out for test, at random with a fixed seed (at least one
    image per class stays in training)."""
    rng = np.random.default_rng(0)
    test_mask = np.zeros(len(files), bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = min(int(round(fraction * len(members))), len(members) - 1)
        test_mask[rng.permutation(members)[:n_test]] = True
    if not test_mask.any():
        raise UserError(f"data.test_split={fraction} holds out no image (too few per class); "
                        "add images, raise data.test_split, or give train/ and test/ folders")
    pick = lambda mask: ([f for f, m in zip(files, mask) if m], labels[mask])  # noqa: E731
    return (*pick(~test_mask), *pick(test_mask))


# ---------------------------------------------------------------------------- reading


def _read_images(files: list[Path], size: tuple[int, int], channels: int) -> np.ndarray:
    """uint8 (N, height, width, channels); decoded on a few threads (Pillow releases the GIL)."""
    out = np.empty((len(files), *size, channels), np.uint8)

    def read(i: int) -> None:
        out[i] = _read_image(files[i], size, channels)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(read, range(len(files))))
    return out


def _read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L").resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"cannot read the image {path} ({' '.join(str(err).split())}); "
                        "remove it or replace it with a readable image") from None
    return pixels.reshape(*size, channels)
