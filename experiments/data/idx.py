"""IDX files (the MNIST family's format): reading and integrity checks (downloads: downloads.py).

Every problem a user can fix (a missing or corrupt file) is raised as a
one-line `UserError` that names the file and says what to do about it.
"""
from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pooch

from experiments.errors import UserError

PathLike = Union[str, os.PathLike]

_DEFAULT_FIX = "delete it and download or copy it again"


# ---------------------------------------------------------------------------- reading


def read_idx_gz(path: PathLike) -> np.ndarray:
    """Parse a gzip-compressed uint8 IDX file into an array of the shape its header states.

    Images (magic 2051) come back as (N, 28, 28), labels (magic 2049) as (N,). The array is
    a read-only view of the decompressed bytes (no copy).
    """
    path = Path(path)
    raw = _read_bytes(path)
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # bad header, truncated or garbled stream
        raise _not_idx(path, f"not valid gzip data: {_one_line(err)}") from None
    return _parse_idx(data, path)


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Check an IDX header (big-endian) against the payload and view the payload as uint8."""
    # Magic = two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or not 1 <= data[3] <= 4:
        magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise _not_idx(path, f"bad magic number {magic}, expected 2051 (images) or 2049 (labels)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _not_idx(path, "header is truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise _not_idx(path, f"expected {expected} bytes for shape {shape}, found {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_gz_cached(path: PathLike) -> np.ndarray:
    """`read_idx_gz`, memoised per process so repeated loads (tests, sweeps) parse once.

    The key includes size and mtime so that a file replaced in place is parsed again. The
    returned array is read-only, so sharing it between callers is safe.
    """
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        raise UserError(f"file {resolved} does not exist; put a copy at that path") from None
    return _read_idx_memo(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)  # 8 = train+test images+labels of two datasets
def _read_idx_memo(path: str, size: int, mtime_ns: int) -> np.ndarray:
    del size, mtime_ns  # only part of the cache key
    return read_idx_gz(path)


# ---------------------------------------------------------------------------- integrity


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in chunks so large files need little memory."""
    return pooch.file_hash(str(path), alg="sha256")


def verify(path: PathLike, expected_sha256: str, fix: Optional[str] = None) -> None:
    """Raise a `UserError` unless `path` exists and has the expected sha256.

    `fix` is the remedy appended to the message; the default suits any downloaded file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file {path} does not exist; {fix or 'put a copy at that path'}")
    try:
        actual = sha256_file(path)
    except OSError as err:
        raise UserError(f"cannot read {path} ({_one_line(err)}); {fix or 'check its permissions'}") from None
    if actual != expected_sha256.lower():
        raise UserError(
            f"file {path} is corrupt (sha256 mismatch: expected {expected_sha256.lower()}, got {actual}); "
            f"{fix or _DEFAULT_FIX}"
        )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"file {path} does not exist; put a copy at that path") from None
    except OSError as err:
        raise UserError(f"cannot read {path} ({_one_line(err)}); check that it is a readable file") from None


def _not_idx(path: Path, reason: str) -> UserError:
    return UserError(f"file {path} is not a valid gzip-compressed IDX file ({reason}); {_DEFAULT_FIX}")


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())
