"""IDX files (the MNIST family's format): reading, integrity checks, download with a cache.

Every problem a user can fix (missing, corrupt or undownloadable file) is raised as a
one-line `UserError` that names the file and says what to do about it.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from http.client import HTTPException
from pathlib import Path
from typing import Optional, Union

import numpy as np

from experiments.errors import UserError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

DOWNLOAD_TIMEOUT_S = 20.0
_CHUNK = 1 << 20
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
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


# ---------------------------------------------------------------------------- download + cache


def cache_dir(dataset: str) -> Path:
    """Per-dataset download directory: $NNRUN_DATA_DIR, else $XDG_CACHE_HOME/nnrun/datasets,
    else ~/.cache/nnrun/datasets; each with a `dataset` subfolder."""
    if os.environ.get("NNRUN_DATA_DIR"):
        base = Path(os.environ["NNRUN_DATA_DIR"]).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG spec says to ignore an empty or relative value.
        root = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
        base = root / "nnrun" / "datasets"
    return base / dataset


def mirrors_from_env(env_var: str, defaults: Sequence[str]) -> list[str]:
    """Base URLs to download from: `env_var` (comma/space separated) replaces `defaults`."""
    override = os.environ.get(env_var, "").replace(",", " ").split()
    return override or list(defaults)


def fetch(
    filename: str,
    sha256: str,
    mirrors: Sequence[str],
    cache_dir: PathLike,
    *,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    hint: str = "",
) -> Path:
    """Return `cache_dir/filename`, downloading it from the first mirror that serves it intact.

    A cached copy with the right checksum is used without touching the network. Downloads go
    to a temporary file in `cache_dir` and are moved into place only after their checksum
    matches, so an interrupted or corrupt download never leaves a partial file behind.
    `hint` is extra advice for the error raised when every mirror fails.
    """
    return fetch_all({filename: sha256}, mirrors, cache_dir, timeout=timeout, hint=hint)[filename]


def fetch_all(
    files: Mapping[str, str],
    mirrors: Sequence[str],
    cache_dir: PathLike,
    *,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    hint: str = "",
) -> dict[str, Path]:
    """`fetch` for several files ({filename: sha256}); one error lists every file still missing."""
    directory = Path(cache_dir).expanduser()
    _make_dir(directory)
    paths: dict[str, Path] = {}
    for filename, sha256 in files.items():
        path, attempts = _fetch_one(filename, sha256.lower(), mirrors, directory, timeout)
        if path is None:
            # Stop at the first failure: without a network every further file would cost
            # another round of timeouts, and the message can list all of them anyway.
            missing = [name for name, digest in files.items() if not _is_intact(directory / name, digest)]
            raise _download_failed(missing, attempts, directory, hint)
        paths[filename] = path
    return paths


def _fetch_one(
    filename: str, sha256: str, mirrors: Sequence[str], directory: Path, timeout: float
) -> tuple[Optional[Path], list[str]]:
    """Cached or freshly downloaded path (None if every mirror failed) and what went wrong."""
    target = directory / filename
    attempts: list[str] = []
    if target.exists():
        if _is_intact(target, sha256):
            return target, attempts
        attempts.append(f"cached {target} is corrupt")
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            _download(url, target, sha256, timeout)
            return target, attempts
        except _DownloadError as err:
            log.info("download of %s failed: %s", url, err)
            attempts.append(f"{url}: {err}")
    return None, attempts


class _DownloadError(Exception):
    """One mirror failed; the message is the reason, for the final error."""


def _download(url: str, target: Path, sha256: str, timeout: float) -> None:
    """Stream `url` into a temp file next to `target`, check its sha256, then rename atomically."""
    log.info("downloading %s", url)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as err:
        raise UserError(
            f"cannot write to the dataset cache {target.parent} ({_one_line(err)}); "
            "set NNRUN_DATA_DIR to a writable directory"
        ) from None
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "nnrun"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise _DownloadError(f"sha256 mismatch (expected {sha256}, got {digest.hexdigest()})")
        os.replace(tmp, target)  # atomic on one filesystem: readers see no file or the whole file
    except urllib.error.HTTPError as err:
        raise _DownloadError(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _DownloadError(_one_line(err.reason)) from None
    except (OSError, HTTPException, ValueError) as err:  # timeouts, resets, malformed URLs
        raise _DownloadError(_one_line(err) or type(err).__name__) from None
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful os.replace


def _download_failed(missing: list[str], attempts: list[str], directory: Path, hint: str) -> UserError:
    return UserError(
        f"could not download {', '.join(missing)} (tried {'; '.join(attempts) or 'no mirrors'}); "
        f"download them by hand into {directory}, or set data.root=DIR to a directory that holds them"
        + (f" ({hint})" if hint else "")
    )


def _is_intact(path: Path, sha256: str) -> bool:
    try:
        return path.is_file() and sha256_file(path) == sha256.lower()
    except OSError:
        return False


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the dataset cache {directory} ({_one_line(err)}); "
            "set NNRUN_DATA_DIR to a writable directory"
        ) from None


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
