"""CIFAR-10 (binary batches, partial test file, download cache) and the user's own data
(`arrays` .npz files, `image_folder` folders of images).

The CIFAR-10 tests that read real data use the shared copy (../shared/data/cifar-10, or
$NNRUN_TEST_CIFAR10_DIR); the rest use tiny generated files. Downloads go to a local HTTP
server; nothing touches the internet or the user's cache.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error
from experiments.data import load_dataset
from experiments.data import cifar10
from experiments.data.cifar10 import CLASSES, RECORD_BYTES, Cifar10Config
from experiments.errors import UserError
from test_data import closed_port_url, serve  # noqa: F401 - the local HTTP server fixture

CIFAR_ENV = "NNRUN_TEST_CIFAR10_DIR"
CIFAR_DIR = Path(os.environ.get(CIFAR_ENV) or REPO.parent / "shared" / "data" / "cifar-10")
needs_cifar = pytest.mark.skipif(not (CIFAR_DIR / "data_batch_1.bin").is_file(),
                                 reason=f"CIFAR-10 copy not found at {CIFAR_DIR}; set {CIFAR_ENV}=DIR")
FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the original test_batch.bin's first ten


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user settings leak in, and any download lands in tmp_path."""
    for var in ("NNRUN_CIFAR10_DIR", "NNRUN_CIFAR10_MIRROR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("NNRUN_DATA_DIR", str(cache))
    return cache


def records(labels: list[int], seed: int = 0) -> bytes:
    """CIFAR-10 binary records: a label byte, then 3x32x32 planar pixels."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (len(labels), RECORD_BYTES), dtype=np.uint8)
    rows[:, 0] = labels
    return rows.tobytes()


def fake_cifar(directory: Path, n_train: int = 8, n_test: int = 4, test_name: str = "test_batch.bin") -> Path:
    """A tiny copy in the real format: five batches of n_train records and one test file."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(cifar10.TRAIN_FILES):
        (directory / name).write_bytes(records([(i + k) % 10 for k in range(n_train)], seed=i))
    (directory / test_name).write_bytes(records([k % 10 for k in range(n_test)], seed=9))
    return directory


def cfg(**fields) -> Cifar10Config:
    return Cifar10Config(**{"val_size": 0, **fields})


# ---------------------------------------------------------------------------- the shared copy


@pytest.fixture(scope="module")
def shared_cifar():
    """A subset of the real files: 2,000 train (of which 500 validation), the first 200 test images."""
    if not (CIFAR_DIR / "data_batch_1.bin").is_file():
        pytest.skip(f"CIFAR-10 copy not found at {CIFAR_DIR}")
    return load_dataset(Cifar10Config(root=str(CIFAR_DIR), train_subset=2000, val_size=500, test_subset=200))


@needs_cifar
def test_cifar10_reads_the_shared_copy_with_its_partial_test_file(shared_cifar) -> None:
    data = shared_cifar
    assert data.train.x.shape == (1500, 32, 32, 3) and data.val.x.shape == (500, 32, 32, 3)
    assert data.test.x.shape == (200, 32, 32, 3)
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int32
    assert data.num_classes == 10 and data.meta["class_names"][3] == "cat"
    assert data.test.y[:10].tolist() == FIRST_TEST_LABELS
    assert data.meta["test_file"].endswith("test_batch_first1000.bin") and data.meta["test_file_examples"] == 1000
    # the records are planar RGB: record 0 of data_batch_1, pixel (0, 0), read by hand
    raw = np.frombuffer((CIFAR_DIR / "data_batch_1.bin").read_bytes()[:RECORD_BYTES], np.uint8)
    mean, std = (np.array(data.meta["normalisation"][k]) for k in ("mean", "std"))
    assert np.allclose(data.train.x[0, 0, 0] * std + mean, raw[[1, 1 + 1024, 1 + 2048]], atol=1e-3)


@needs_cifar
def test_cifar10_per_channel_normalisation_uses_the_training_split(shared_cifar) -> None:
    x = shared_cifar.train.x.reshape(-1, 3)
    assert np.allclose(x.mean(0, dtype=np.float64), 0, atol=1e-5)
    assert np.allclose(x.std(0, dtype=np.float64), 1, atol=1e-5)
    mean = shared_cifar.meta["normalisation"]["mean"]
    assert len(mean) == 3 and mean[0] > mean[2]  # red brighter than blue, as in the published statistics
    # validation was not part of the statistics: its means are close to 0 but not exactly 0
    assert 0 < np.abs(shared_cifar.val.x.reshape(-1, 3).mean(0)).max() < 0.2


@needs_cifar
def test_crop_and_flip_work_on_cifar_batches_on_device(shared_cifar) -> None:
    import jax

    from experiments.data.augment import augment

    x = shared_cifar.train.x[:8]
    ops = [{"name": "random_crop", "padding": 4}, {"name": "flip_lr", "p": 0.5}]
    out = np.asarray(jax.jit(lambda k, b: augment(ops, k, b))(jax.random.key(0), x))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(len(x)):  # every output is a 32x32 window of the padded image, mirrored or not
        windows = [padded[i, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(np.array_equal(out[i], w) or np.array_equal(out[i], w[:, ::-1]) for w in windows), i
    assert not np.array_equal(out, x)


# ---------------------------------------------------------------------------- local copies, bad files


def test_cifar10_root_with_the_archive_folder_and_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cifar(tmp_path / "copy" / "cifar-10-batches-bin")
    data = load_dataset(cfg(root=str(tmp_path / "copy"), pixels="unit"))
    assert len(data.train) == 40 and len(data.test) == 4 and data.val is None
    assert 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0
    monkeypatch.setenv("NNRUN_CIFAR10_DIR", str(tmp_path / "copy"))
    assert len(load_dataset(cfg()).train) == 40


def test_cifar10_truncated_record_names_the_file(tmp_path: Path) -> None:
    copy = fake_cifar(tmp_path / "copy", test_name="test_batch_first4.bin")
    path = copy / "test_batch_first4.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match=r"test_batch_first4.bin is not a CIFAR-10 binary batch: .* 3 records .*"
                                        r"truncated one; copy the file again"):
        load_dataset(cfg(root=str(copy)))


def test_cifar10_bad_label_names_the_file_and_record(tmp_path: Path) -> None:
    copy = fake_cifar(tmp_path / "copy")
    raw = bytearray((copy / "data_batch_2.bin").read_bytes())
    raw[3 * RECORD_BYTES] = 12
    (copy / "data_batch_2.bin").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="data_batch_2.bin is not a CIFAR-10 binary batch: record 3 has label 12"):
        load_dataset(cfg(root=str(copy)))


def test_cifar10_missing_files_are_named_with_the_fix(tmp_path: Path) -> None:
    copy = fake_cifar(tmp_path / "copy")
    (copy / "data_batch_4.bin").unlink()
    (copy / "test_batch.bin").unlink()
    with pytest.raises(UserError, match=r"lacks data_batch_4.bin, test_batch.bin; put the CIFAR-10 binary files "
                                        r".* or unset data.root="):
        load_dataset(cfg(root=str(copy)))


def test_cifar10_several_partial_test_files_need_a_choice(tmp_path: Path) -> None:
    copy = fake_cifar(tmp_path / "copy", test_name="test_batch_a.bin")
    (copy / "test_batch_b.bin").write_bytes(records([1, 2]))
    with pytest.raises(UserError, match="several test files .* data.test_file=NAME"):
        load_dataset(cfg(root=str(copy)))
    assert len(load_dataset(cfg(root=str(copy), test_file="test_batch_b.bin")).test) == 2


def test_cifar10_bad_pixels_value() -> None:
    with pytest.raises(UserError, match="data.pixels.*channel, standard, unit"):
        Cifar10Config(pixels="zscore")


# ---------------------------------------------------------------------------- download cache


def _archive(tmp_path: Path) -> tuple[Path, str]:
    """A tiny cifar-10-binary.tar.gz in the real layout, served from its own folder; its md5."""
    files = fake_cifar(tmp_path / "src")
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / cifar10.ARCHIVE, "w:gz") as tar:
        for path in sorted(files.iterdir()):
            tar.add(path, arcname=f"{cifar10.ARCHIVE_DIR}/{path.name}")
        readme = b"readme"
        info = tarfile.TarInfo(f"{cifar10.ARCHIVE_DIR}/readme.html")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return served, "md5:" + hashlib.md5((served / cifar10.ARCHIVE).read_bytes()).hexdigest()


def test_cifar10_downloads_extracts_and_caches(tmp_path: Path, isolated_env: Path, serve,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    served, md5 = _archive(tmp_path)
    monkeypatch.setattr(cifar10, "ARCHIVE_HASH", md5)
    server = serve(served)
    monkeypatch.setenv("NNRUN_CIFAR10_MIRROR", f"{closed_port_url()}, {server.url}")
    data = load_dataset(cfg())
    assert len(data.train) == 40 and len(data.test) == 4
    cached = isolated_env / "cifar10"
    assert sorted(p.name for p in cached.iterdir()) == [cifar10.ARCHIVE_DIR]  # archive gone, no temp files
    assert sorted(p.name for p in (cached / cifar10.ARCHIVE_DIR).iterdir()) == sorted(
        [*cifar10.TRAIN_FILES, cifar10.TEST_FILE])
    load_dataset(cfg())
    assert server.requests == [f"/{cifar10.ARCHIVE}"]  # the second load is served from the cache


def test_cifar10_corrupt_download_leaves_nothing(tmp_path: Path, isolated_env: Path, serve,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    served, _ = _archive(tmp_path)
    monkeypatch.setattr(cifar10, "ARCHIVE_HASH", "md5:" + "0" * 32)
    monkeypatch.setenv("NNRUN_CIFAR10_MIRROR", serve(served).url)
    with pytest.raises(UserError, match=f"{cifar10.ARCHIVE}: md5 mismatch"):
        load_dataset(cfg())
    assert list((isolated_env / "cifar10").iterdir()) == []


def test_cifar10_offline_names_the_file_and_the_fix(isolated_env: Path, nnrun_main,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_port_url()
    monkeypatch.setenv("NNRUN_CIFAR10_MIRROR", url)
    monkeypatch.setenv("NNRUN_DATA_DIR", str(isolated_env))  # the `outputs` fixture resets nothing here
    outcome = nnrun_main("train", "conf=lenet5", "data=cifar10", "trainer.epochs=1")
    assert_one_line_error(outcome, "could not download cifar-10-binary.tar.gz", url,
                          str(isolated_env / "cifar10"), "data.root=DIR", "NNRUN_CIFAR10_DIR")
    assert list((isolated_env / "cifar10").iterdir()) == []
