"""Downloads into the dataset cache, checked against published checksums (through pooch).

pooch does the transfer, the checksum (sha256 by default, `md5:<hex>` etc. where only that
is published) and the atomic write: a download lands in a temporary file beside its target
and is moved into place only once its checksum matches. This module adds what nnrun needs
around it: the cache directory, several mirrors tried in order, no network at all when the
cache is intact, atomic extraction of archives, and one-line `UserError`s that name the
files, every mirror tried and the fix.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import pooch
import requests

from experiments.errors import UserError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

DOWNLOAD_TIMEOUT_S = 20.0


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


def is_intact(path: PathLike, known_hash: str) -> bool:
    """Whether `path` is a file whose checksum is `known_hash` (`[alg:]hex`, sha256 by default)."""
    try:
        return Path(path).is_file() and pooch.file_hash(str(path), alg=_algorithm(known_hash)) == _digest(known_hash)
    except OSError:
        return False


def fetch(filename: str, known_hash: str, mirrors: Sequence[str], cache_dir: PathLike, *,
          timeout: float = DOWNLOAD_TIMEOUT_S, hint: str = "") -> Path:
    """Return `cache_dir/filename`, downloading it from the first mirror that serves it intact.

    A cached copy with the right checksum is used without touching the network. `hint` is
    extra advice for the error raised when every mirror fails.
    """
    return fetch_all({filename: known_hash}, mirrors, cache_dir, timeout=timeout, hint=hint)[filename]


def fetch_all(files: Mapping[str, str], mirrors: Sequence[str], cache_dir: PathLike, *,
              timeout: float = DOWNLOAD_TIMEOUT_S, hint: str = "") -> dict[str, Path]:
    """`fetch` for several files ({filename: known_hash}); one error lists every file still missing."""
    directory = Path(cache_dir).expanduser()
    _make_dir(directory)
    paths: dict[str, Path] = {}
    for filename, known_hash in files.items():
        path, attempts = _fetch_one(filename, known_hash, mirrors, directory, timeout)
        if path is None:
            # Stop at the first failure: without a network every further file would cost
            # another round of timeouts, and the message can list all of them anyway.
            missing = [name for name, h in files.items() if not is_intact(directory / name, h)]
            raise _download_failed(missing, attempts, directory, hint)
        paths[filename] = path
    return paths


def extract_tar(archive: PathLike, member_dir: str, members: Sequence[str], dest: PathLike) -> Path:
    """Extract `member_dir/<member>` for each member of a tar archive into `dest`, atomically.

    The members are unpacked into a temporary folder beside `dest`, which is renamed to
    `dest` only when all of them are there: an interrupted extraction leaves no half folder.
    """
    dest = Path(dest)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        with tarfile.open(archive) as tar:
            for member in members:
                try:
                    info = tar.getmember(f"{member_dir}/{member}")
                except KeyError:
                    raise UserError(f"archive {archive} has no {member_dir}/{member}; delete it and download it again") from None
                info.name = member  # flatten: dest holds the files themselves
                tar.extract(info, tmp, filter="data")
        if dest.exists():  # an older, incomplete copy: replaced as a whole
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except (OSError, tarfile.TarError) as err:
        raise UserError(f"cannot extract {archive} into {dest} ({_one_line(err)}); "
                        "delete the archive to download it again, or free disk space") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after the rename
    return dest


# ---------------------------------------------------------------------------- internals


def _fetch_one(filename: str, known_hash: str, mirrors: Sequence[str], directory: Path,
               timeout: float) -> tuple[Optional[Path], list[str]]:
    """Cached or freshly downloaded path (None if every mirror failed) and what went wrong."""
    target = directory / filename
    attempts: list[str] = []
    if target.exists():
        if is_intact(target, known_hash):
            return target, attempts
        attempts.append(f"cached {target} is corrupt")
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=timeout, headers={"User-Agent": "nnrun"})
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        log.info("downloading %s", url)
        try:
            pooch.retrieve(url, known_hash=known_hash.lower(), fname=filename, path=directory, downloader=downloader)
            return target, attempts
        except ValueError as err:  # pooch's checksum mismatch (the temporary file is already gone)
            reason = f"{_algorithm(known_hash)} mismatch" if "hash" in str(err) else _one_line(err)
            attempts.append(f"{url}: {reason}")
        except requests.exceptions.HTTPError as err:
            response = err.response
            attempts.append(f"{url}: HTTP {response.status_code} {response.reason}" if response is not None
                            else f"{url}: {_one_line(err)}")
        except (requests.exceptions.RequestException, OSError) as err:  # refused, timeouts, resets, bad URLs
            attempts.append(f"{url}: {_network_reason(err)}")
        log.info("download failed: %s", attempts[-1])
    return None, attempts


def _download_failed(missing: list[str], attempts: list[str], directory: Path, hint: str) -> UserError:
    return UserError(
        f"could not download {', '.join(missing)} (tried {'; '.join(attempts) or 'no mirrors'}); "
        f"download them by hand into {directory}, or set data.root=DIR to a directory that holds them"
        + (f" ({hint})" if hint else "")
    )


def _algorithm(known_hash: str) -> str:
    return known_hash.split(":", 1)[0].lower() if ":" in known_hash else "sha256"


def _digest(known_hash: str) -> str:
    return known_hash.split(":", 1)[-1].lower()


def _network_reason(err: BaseException) -> str:
    """The useful end of requests' nested messages ('[Errno 111] Connection refused')."""
    text = _one_line(err)
    errno = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if errno:
        return errno.group(0).strip()
    if isinstance(err, requests.exceptions.Timeout):
        return "timed out"
    return text or type(err).__name__


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the dataset cache {directory} ({_one_line(err)}); "
            "set NNRUN_DATA_DIR to a writable directory"
        ) from None


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())
