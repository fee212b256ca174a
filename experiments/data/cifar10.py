"""CIFAR-10 (Krizhevsky 2009): 50k train / 10k test 32x32 colour images in 10 classes.

Read from the binary version (`cifar-10-binary.tar.gz`, folder `cifar-10-batches-bin`):
`data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`, each a run of 3,073-byte
records, one label byte then the 1,024 red, 1,024 green and 1,024 blue pixels of a 32x32
image, row-major. Images come back as float32 (N, 32, 32, 3), labels as int32.

Where the files come from, highest priority first:
- `data.root=DIR` (or `NNRUN_CIFAR10_DIR`): a folder holding the six .bin files (or their
  `cifar-10-batches-bin/` folder). A test file holding only the first test records is
  accepted: `test_batch.bin` if there is one, else the folder's only `test_batch*.bin`
  (`data.test_file=NAME` picks one by name), and the run says how many test images it has.
- the cache (`downloads.cache_dir`): the archive is downloaded once from the mirrors in
  `NNRUN_CIFAR10_MIRROR` (comma separated base URLs) or the authors' site, checked
  against its published md5, extracted atomically and deleted.

`data.pixels`: `channel` (default) standardises each colour channel with the mean and std of
the training split; `standard` with one mean and std; `unit` scales to [0, 1].
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from experiments.data import DataConfig, Dataset, register_dataset
from experiments.data.downloads import cache_dir, extract_tar, fetch, mirrors_from_env
from experiments.data.pixels import check_pixels, image_splits
from experiments.errors import UserError

log = logging.getLogger(__name__)

ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_HASH = "md5:c32a1d4ab5d03f1284b67883e8d87530"  # published on the authors' page
ARCHIVE_DIR = "cifar-10-batches-bin"
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
TEST_SIZE = 10_000
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIDE, CHANNELS = 32, 3
RECORD_BYTES = 1 + SIDE * SIDE * CHANNELS
DIR_ENV, MIRROR_ENV = "NNRUN_CIFAR10_DIR", "NNRUN_CIFAR10_MIRROR"


@dataclass
class Cifar10Config(DataConfig):
    name: str = "cifar10"
    pixels: str = "channel"  # channel | standard | unit (see the module docstring)
    test_file: Optional[str] = None  # in data.root: None = test_batch.bin, else the one test_batch*.bin

    def __post_init__(self) -> None:
        check_pixels(self.pixels, ("channel", "standard", "unit"))


@register_dataset("cifar10", schema=Cifar10Config)
def load_cifar10(cfg: Any) -> Dataset:
    """CIFAR-10: 50k train / 10k test 32x32x3 colour images, 10 classes (downloaded once, md5-checked)."""
    train_paths, test_path = _locate(cfg)
    train_x, train_y = zip(*(read_records(p) for p in train_paths))
    test_x, test_y = read_records(test_path)
    if len(test_x) < TEST_SIZE:
        log.warning("CIFAR-10 test file %s holds %d of the %d test images: test results cover those only",
                    test_path, len(test_x), TEST_SIZE)
    train, val, test, meta = image_splits(np.concatenate(train_x), np.concatenate(train_y), test_x, test_y,
                                          cfg, "CIFAR-10")
    meta.update(class_names=list(CLASSES), layout="image (height, width, channels)",
                test_file=str(test_path), test_file_examples=len(test_x))
    return Dataset(cfg.name, train, val, test, num_classes=len(CLASSES), meta=meta)


# ---------------------------------------------------------------------------- reading


def read_records(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels uint8 (N,)) of one binary batch file; read-only,
    parsed once per process (keyed by size and mtime, so a replaced file is read again)."""
    try:
        stat = path.stat()
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}); put the CIFAR-10 binary batch files there") from None
    return _read_records_memo(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=6)  # the six files of one copy
def _read_records_memo(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    del mtime_ns  # only part of the cache key
    if size == 0 or size % RECORD_BYTES:
        whole, extra = divmod(size, RECORD_BYTES)
        raise UserError(f"file {path} is not a CIFAR-10 binary batch: {size} bytes is {whole} records of "
                        f"{RECORD_BYTES} bytes and {extra} bytes of a truncated one; copy the file again")
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.max() >= len(CLASSES):
        bad = int(np.argmax(labels >= len(CLASSES)))
        raise UserError(f"file {path} is not a CIFAR-10 binary batch: record {bad} has label {labels[bad]} "
                        f"(labels are 0-9); copy the file again")
    # planes (N, 3, 32, 32) -> images (N, 32, 32, 3), the layout every model here takes
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1))
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


# ---------------------------------------------------------------------------- locating files


def _locate(cfg: Any) -> tuple[list[Path], Path]:
    """The five training files and the test file, from a local copy or the download cache."""
    if cfg.root or os.environ.get(DIR_ENV):
        setting = f"data.root={cfg.root}" if cfg.root else f"{DIR_ENV}={os.environ[DIR_ENV]}"
        return _local_files(Path(str(cfg.root or os.environ[DIR_ENV])).expanduser(), cfg.test_file, setting)
    if cfg.test_file:
        raise UserError(f"data.test_file={cfg.test_file} picks a file in a local copy; set data.root=DIR too")
    extracted = cache_dir("cifar10") / ARCHIVE_DIR
    if not all((extracted / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
        _download(extracted)
    return [extracted / name for name in TRAIN_FILES], extracted / TEST_FILE


def _local_files(root: Path, test_file: Optional[str], setting: str) -> tuple[list[Path], Path]:
    directory = root / ARCHIVE_DIR if (root / ARCHIVE_DIR).is_dir() else root
    fix = (f"put the CIFAR-10 binary files ({', '.join(TRAIN_FILES)} and {TEST_FILE}, from {ARCHIVE}) "
           f"in {directory}, or unset {setting}")
    if not directory.is_dir():
        raise UserError(f"folder {directory} does not exist; {fix}")
    test = _test_file(directory, test_file, fix)
    missing = [name for name in TRAIN_FILES if not (directory / name).is_file()] + ([] if test else [TEST_FILE])
    if missing:
        raise UserError(f"{directory} lacks {', '.join(missing)}; {fix}")
    return [directory / name for name in TRAIN_FILES], test  # type: ignore[return-value]


def _test_file(directory: Path, name: Optional[str], fix: str) -> Optional[Path]:
    """The named test file, else test_batch.bin, else the folder's only test_batch*.bin."""
    if name:
        if not (directory / name).is_file():
            raise UserError(f"data.test_file={name}: {directory / name} does not exist; {fix}")
        return directory / name
    if (directory / TEST_FILE).is_file():
        return directory / TEST_FILE
    partial = sorted(directory.glob("test_batch*.bin"))
    if len(partial) > 1:
        raise UserError(f"{directory} holds several test files ({', '.join(p.name for p in partial)}) and no "
                        f"{TEST_FILE}; pick one with data.test_file=NAME")
    return partial[0] if partial else None


def _download(extracted: Path) -> None:
    """Download the archive into the cache, extract the six files atomically, drop the archive."""
    hint = f"or set {DIR_ENV}=DIR; {MIRROR_ENV} overrides the download URL"
    archive = fetch(ARCHIVE, ARCHIVE_HASH, mirrors_from_env(MIRROR_ENV, MIRRORS), extracted.parent, hint=hint)
    log.info("extracting %s into %s", archive, extracted)
    extract_tar(archive, ARCHIVE_DIR, (*TRAIN_FILES, TEST_FILE), extracted)
    archive.unlink(missing_ok=True)  # 170 MB no longer needed: the extracted files are what is read
