"""MNIST-family datasets: parsing, integrity checks, local copies and the download cache.

Downloads are tested against a local HTTP server; no test touches the internet or the
user's real cache (NNRUN_DATA_DIR points into tmp_path for every test).
"""
from __future__ import annotations

import functools
import gzip
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.data import DATASETS, DataConfig, Dataset, load_dataset
from experiments.data.downloads import cache_dir, fetch, mirrors_from_env
from experiments.data.idx import read_idx_gz, sha256_file, verify
from experiments.data.mnist import FASHION_MNIST_FILES, MNIST_FILES, PACKAGED_MNIST_DIR, ImageDataConfig
from experiments.errors import UserError

from conftest import FASHION_TEST_DIR as FASHION_DIR, needs_fashion  # noqa: E402 - $NNRUN_TEST_FASHION_MNIST_DIR

MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
ENV_VARS = ("NNRUN_MNIST_DIR", "NNRUN_FASHION_MNIST_DIR", "NNRUN_FASHION_MNIST_MIRROR", "XDG_CACHE_HOME")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user settings leak in, and any download lands in tmp_path."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("NNRUN_DATA_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    """The full packaged MNIST with default settings, parsed once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("NNRUN_MNIST_DIR", raising=False)
        return load_dataset(DataConfig(name="mnist"))


@pytest.fixture
def mnist_copy(tmp_path: Path) -> Path:
    """A writable copy of the packaged MNIST files."""
    copy = tmp_path / "mnist-copy"
    copy.mkdir()
    for name in MNIST_FILES:
        shutil.copyfile(PACKAGED_MNIST_DIR / name, copy / name)
    return copy


class _Server:
    def __init__(self, url: str, requests: list[str]):
        self.url, self.requests = url, requests


@pytest.fixture
def serve() -> Iterator[Callable[[Path], _Server]]:
    """Factory: serve a directory over HTTP on 127.0.0.1 and record the paths requested."""
    servers: list[ThreadingHTTPServer] = []

    def start(directory: Path) -> _Server:
        requests: list[str] = []

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return _Server(f"http://127.0.0.1:{server.server_address[1]}/", requests)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL on which nothing listens, so connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def write_idx_gz(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def small_cfg(name: str = "mnist", **overrides: object) -> DataConfig:
    fields = dict(name=name, train_subset=200, val_size=50, test_subset=100)
    fields.update(overrides)
    return DataConfig(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- MNIST


def test_registry_has_mnist_family() -> None:
    assert {"mnist", "fashion_mnist", "mnist_seq"} <= set(DATASETS.names())
    assert issubclass(DATASETS.get("mnist").schema, DataConfig)


def test_mnist_shapes_and_dtypes(mnist: Dataset) -> None:
    assert mnist.train.x.shape == (55000, 28, 28, 1)
    assert mnist.val is not None and mnist.val.x.shape == (5000, 28, 28, 1)
    assert mnist.test.x.shape == (10000, 28, 28, 1)
    assert mnist.input_shape == (28, 28, 1)
    assert mnist.num_classes == 10
    for split in (mnist.train, mnist.val, mnist.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int32
        assert len(split.x) == len(split.y)


def test_mnist_label_histograms(mnist: Dataset) -> None:
    assert mnist.val is not None
    assert np.bincount(mnist.test.y, minlength=10).tolist() == MNIST_TEST_HIST
    train_and_val = np.concatenate([mnist.train.y, mnist.val.y])
    assert np.bincount(train_and_val, minlength=10).tolist() == MNIST_TRAIN_HIST


def test_mnist_is_standardised(mnist: Dataset) -> None:
    x = mnist.train.x
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1.0) < 0.01
    assert np.isclose(x.min(), (0 - 0.1307) / 0.3081, atol=1e-5)
    assert np.isclose(x.max(), (1 - 0.1307) / 0.3081, atol=1e-5)


def test_mnist_seq_is_mnist_as_rows(mnist: Dataset) -> None:
    seq = load_dataset(small_cfg("mnist_seq"))
    assert seq.train.x.shape == (150, 28, 28) and seq.input_shape == (28, 28)
    assert seq.val is not None and seq.val.x.shape == (50, 28, 28)
    assert seq.test.x.shape == (100, 28, 28)
    np.testing.assert_array_equal(seq.train.x, mnist.train.x[:150, :, :, 0])
    np.testing.assert_array_equal(seq.test.y, mnist.test.y[:100])


def test_subsets_and_no_validation(mnist: Dataset) -> None:
    data = load_dataset(small_cfg(val_size=0))
    assert data.val is None
    assert len(data.train) == 200 and len(data.test) == 100
    np.testing.assert_array_equal(data.train.x, mnist.train.x[:200])


def test_validation_is_carved_from_the_subset(mnist: Dataset) -> None:
    data = load_dataset(small_cfg())
    assert data.val is not None and len(data.train) == 150 and len(data.val) == 50
    np.testing.assert_array_equal(data.val.y, mnist.train.y[150:200])


def test_val_size_must_leave_training_data() -> None:
    with pytest.raises(UserError, match=r"data\.val_size=200"):
        load_dataset(small_cfg(val_size=200))


@pytest.mark.parametrize("field, value", [("train_subset", 0), ("train_subset", 60001), ("test_subset", -1)])
def test_subset_out_of_range(field: str, value: int) -> None:
    with pytest.raises(UserError, match=rf"data\.{field}={value}"):
        load_dataset(small_cfg(**{field: value}))


def test_accepts_omegaconf_config() -> None:
    cfg = OmegaConf.structured(small_cfg())
    data = load_dataset(cfg)
    assert len(data.train) == 150 and data.name == "mnist"


def test_root_points_at_a_copy(mnist_copy: Path, mnist: Dataset) -> None:
    data = load_dataset(small_cfg(root=str(mnist_copy)))
    np.testing.assert_array_equal(data.test.x, mnist.test.x[:100])


def test_env_dir_is_used_and_root_overrides_it(
    mnist_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("NNRUN_MNIST_DIR", str(empty))
    with pytest.raises(UserError, match="NNRUN_MNIST_DIR") as err:
        load_dataset(small_cfg())
    assert str(empty) in str(err.value)
    assert len(load_dataset(small_cfg(root=str(mnist_copy))).train) == 150


def test_corrupt_copy_names_the_file(mnist_copy: Path) -> None:
    bad = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    flip_byte(bad, offset=100)
    with pytest.raises(UserError) as err:
        load_dataset(small_cfg(root=str(mnist_copy)))
    message = str(err.value)
    assert str(bad) in message and "sha256 mismatch" in message
    assert MNIST_FILES[bad.name] in message  # the expected checksum
    assert "data.root" in message and "\n" not in message


def test_missing_file_names_the_file_and_the_fix(mnist_copy: Path) -> None:
    missing = mnist_copy / "train-labels-idx1-ubyte.gz"
    missing.unlink()
    with pytest.raises(UserError) as err:
        load_dataset(small_cfg(root=str(mnist_copy)))
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert f"in {mnist_copy}" in message and "unset data.root" in message


# ---------------------------------------------------------------------------- IDX parsing and checks


def test_read_idx_gz_images_and_labels(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    write_idx_gz(tmp_path / "img.gz", images, 2051)
    write_idx_gz(tmp_path / "lbl.gz", np.array([7, 0, 9]), 2049)
    got = read_idx_gz(tmp_path / "img.gz")
    assert got.dtype == np.uint8 and got.shape == (3, 28, 28)
    np.testing.assert_array_equal(got, images)
    assert read_idx_gz(tmp_path / "lbl.gz").tolist() == [7, 0, 9]


def test_read_idx_gz_rejects_truncated_and_garbled_files(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes((PACKAGED_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()[:2000])
    with pytest.raises(UserError, match="truncated.gz.*not a valid gzip-compressed IDX"):
        read_idx_gz(truncated)

    short = tmp_path / "short.gz"  # valid gzip, but fewer bytes than the header promises
    short.write_bytes(gzip.compress(struct.pack(">II", 2049, 10) + b"\x01\x02"))
    with pytest.raises(UserError, match="short.gz.*expected 18 bytes"):
        read_idx_gz(short)

    wrong_magic = tmp_path / "magic.gz"
    wrong_magic.write_bytes(gzip.compress(struct.pack(">II", 1234, 0)))
    with pytest.raises(UserError, match="magic.gz.*bad magic number 1234"):
        read_idx_gz(wrong_magic)

    with pytest.raises(UserError, match="nothere.gz does not exist"):
        read_idx_gz(tmp_path / "nothere.gz")


def test_verify(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    digest = sha256_file(path)
    assert digest == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    verify(path, digest.upper())
    with pytest.raises(UserError, match=rf"{path.name} is corrupt \(sha256 mismatch: expected 0+, got {digest}\)"):
        verify(path, "0" * 64)
    with pytest.raises(UserError, match="gone.bin does not exist; copy it here"):
        verify(tmp_path / "gone.bin", digest, fix="copy it here")


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir("ds") == tmp_path / "cache" / "ds"  # NNRUN_DATA_DIR from isolated_env
    monkeypatch.delenv("NNRUN_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("ds") == tmp_path / "xdg" / "nnrun" / "datasets" / "ds"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("ds") == tmp_path / "home" / ".cache" / "nnrun" / "datasets" / "ds"


def test_mirrors_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mirrors_from_env("NNRUN_TEST_MIRROR", ["http://a/"]) == ["http://a/"]
    monkeypatch.setenv("NNRUN_TEST_MIRROR", "http://b/, http://c/")
    assert mirrors_from_env("NNRUN_TEST_MIRROR", ["http://a/"]) == ["http://b/", "http://c/"]


# ---------------------------------------------------------------------------- downloads


@pytest.fixture
def blob(tmp_path: Path) -> tuple[str, str, Path]:
    """A small file to download: (filename, sha256, directory holding a good copy)."""
    good = tmp_path / "good"
    good.mkdir()
    (good / "blob.gz").write_bytes(b"x" * 5000)
    return "blob.gz", sha256_file(good / "blob.gz"), good


def test_fetch_downloads_once(blob: tuple[str, str, Path], serve, isolated_env: Path) -> None:
    name, digest, good = blob
    server = serve(good)
    path = fetch(name, digest, [server.url], isolated_env / "ds")
    assert path == isolated_env / "ds" / name and sha256_file(path) == digest
    assert fetch(name, digest, [server.url], isolated_env / "ds") == path
    assert server.requests == [f"/{name}"]


def test_fetch_rejects_a_corrupt_download(blob: tuple[str, str, Path], serve, tmp_path: Path) -> None:
    name, digest, good = blob
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copyfile(good / name, bad / name)
    flip_byte(bad / name)
    server = serve(bad)
    target = tmp_path / "cache" / "ds"
    with pytest.raises(UserError) as err:
        fetch(name, digest, [server.url], target)
    message = str(err.value)
    assert f"{server.url}{name}: sha256 mismatch" in message and str(target) in message
    assert list(target.iterdir()) == []  # no partial or corrupt file left behind


def test_fetch_falls_back_to_the_next_mirror(blob: tuple[str, str, Path], serve, tmp_path: Path) -> None:
    name, digest, good = blob
    empty = tmp_path / "empty"
    empty.mkdir()
    missing, working = serve(empty), serve(good)
    path = fetch(name, digest, [closed_port_url(), missing.url, working.url], tmp_path / "cache" / "ds")
    assert sha256_file(path) == digest
    assert missing.requests == [f"/{name}"] and working.requests == [f"/{name}"]


def test_fetch_replaces_a_corrupt_cached_file(blob: tuple[str, str, Path], serve, tmp_path: Path) -> None:
    name, digest, good = blob
    target = tmp_path / "cache" / "ds"
    target.mkdir(parents=True)
    (target / name).write_bytes(b"stale")
    path = fetch(name, digest, [serve(good).url], target)
    assert sha256_file(path) == digest


def test_fetch_reports_http_errors(blob: tuple[str, str, Path], serve, tmp_path: Path) -> None:
    name, digest, _ = blob
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="HTTP 404"):
        fetch(name, digest, [serve(empty).url], tmp_path / "cache" / "ds")


# ---------------------------------------------------------------------------- Fashion-MNIST


@needs_fashion
def test_fashion_mnist_downloads_into_the_cache(serve, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(FASHION_DIR)
    monkeypatch.setenv("NNRUN_FASHION_MNIST_MIRROR", server.url)
    data = load_dataset(DataConfig(name="fashion_mnist"))
    assert data.train.x.shape == (55000, 28, 28, 1) and data.test.x.shape == (10000, 28, 28, 1)
    assert data.train.x.dtype == np.float32 and data.test.y.dtype == np.int32
    assert np.bincount(data.test.y, minlength=10).tolist() == [1000] * 10
    assert abs(float(data.train.x.mean())) < 0.01
    assert data.meta["class_names"][9] == "Ankle boot"

    cached = isolated_env / "fashion_mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(FASHION_MNIST_FILES)
    assert len(server.requests) == 4
    load_dataset(small_cfg("fashion_mnist"))
    assert len(server.requests) == 4  # the second load is served from the cache


@needs_fashion
def test_fashion_mnist_root_skips_the_download(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNRUN_FASHION_MNIST_MIRROR", closed_port_url())
    data = load_dataset(small_cfg("fashion_mnist", root=str(FASHION_DIR)))
    assert len(data.train) == 150 and data.num_classes == 10
    assert not (isolated_env / "fashion_mnist").exists()


def test_fashion_mnist_without_network_says_what_to_do(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_port_url()
    monkeypatch.setenv("NNRUN_FASHION_MNIST_MIRROR", url)
    with pytest.raises(UserError) as err:
        load_dataset(small_cfg("fashion_mnist"))
    message = str(err.value)
    assert all(name in message for name in FASHION_MNIST_FILES)
    assert url in message and str(isolated_env / "fashion_mnist") in message
    assert "data.root=DIR" in message and "NNRUN_FASHION_MNIST_DIR" in message
    assert list((isolated_env / "fashion_mnist").iterdir()) == []


# ---------------------------------------------------------------------------- LeNet5's padding


def test_lenet5_pads_with_the_background_of_the_data(mnist: Dataset) -> None:
    """The course pads the 28x28 digit with blank pixels: after standardisation a blank pixel is
    (0 - mean) / std, not 0 (which would be the mean grey)."""
    import jax.numpy as jnp

    from experiments.models import build_model, data_info
    from experiments.models.lenet5 import LeNet5Config, pad_with

    blank = (0 - 0.1307) / 0.3081
    assert np.isclose(mnist.meta["background"], blank) and np.isclose(mnist.train.x.min(), blank)
    assert np.isclose(build_model(LeNet5Config(), data_info(mnist)).pad_value, blank)
    assert build_model(LeNet5Config(pad_value=0.0), data_info(mnist)).pad_value == 0.0
    unit = ImageDataConfig(name="mnist", train_subset=200, val_size=50, test_subset=100, pixels="unit")
    assert load_dataset(unit).meta["background"] == 0.0

    digits = jnp.asarray(mnist.test.x[:2])
    padded = np.asarray(pad_with(digits, 32, blank))
    assert padded.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], mnist.test.x[:2])
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.allclose(padded[:, border], blank)
    per_channel = np.asarray(pad_with(jnp.zeros((1, 30, 30, 3)), 32, (1.0, 2.0, 3.0)))
    assert per_channel[0, 0, 0].tolist() == [1.0, 2.0, 3.0] and per_channel[0, 1, 1].tolist() == [0.0] * 3
