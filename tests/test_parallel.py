"""A batch split over several devices (trainer.devices, experiments/training/parallel.py):
the same training as on one device up to rounding, the rules of `null` (auto), and bad
values as one-line errors before a run exists. The test process has two CPU devices
(conftest.py sets JAX_NUM_CPU_DEVICES=2)."""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import TINY, assert_one_line_error, nnrun_proc, read_json, read_metrics
from experiments.training.parallel import batch_mesh

# 15 steps in chunks of 4: the epoch ends with 3 steps dispatched one by one, the
# path on which two programs in flight once deadlocked XLA-CPU's collectives
LSTM = [*TINY, "trainer.epochs=1", "trainer.log_every=4", "model.hidden=32"]


def _train(nnrun_cli, run_dir: Path, *overrides: str) -> dict:
    result = nnrun_cli("train", "conf=lstm_mnist", *LSTM, *overrides, f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.out
    return read_json(run_dir / "summary.json")


def test_a_batch_split_over_two_devices_trains_as_one_device_does(nnrun_cli, tmp_path: Path) -> None:
    one = _train(nnrun_cli, tmp_path / "one", "trainer.devices=1")
    two = _train(nnrun_cli, tmp_path / "two", "trainer.devices=2")
    assert (one["devices"], two["devices"]) == (1, 2)
    losses = [[r["loss"] for r in read_metrics(tmp_path / d) if r["split"] == "train"] for d in ("one", "two")]
    assert len(losses[0]) == len(losses[1]) >= 4
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-3)  # every chunk
    assert two["test"]["loss"] == pytest.approx(one["test"]["loss"], rel=2e-3)
    assert abs(two["test"]["accuracy"] - one["test"]["accuracy"]) <= 0.003
    # the checkpoint of a split run restores and evaluates on one device to the run's own result
    result = nnrun_cli("eval", str(tmp_path / "two"))
    assert result.code == 0, result.out
    evaluated = read_json(tmp_path / "two" / "eval-best-test.json")
    assert evaluated["accuracy"] == pytest.approx(two["test"]["accuracy"], abs=1e-6)


def test_split_programs_dispatched_one_per_step_do_not_deadlock(tmp_path: Path) -> None:
    """LeNet5 split over 2 devices, every step its own dispatch (a chunk longer than the epoch):
    before `Placement.one_at_a_time`, this run aborted after 40 s in an XLA-CPU collective
    rendezvous (two programs in flight, each holding a pool thread). A separate process, so an
    abort fails this test alone."""
    out = nnrun_proc("train", "conf=lenet5", "data.train_subset=20000", "data.val_size=200", "data.test_subset=200",
                     "trainer.epochs=1", "trainer.log_every=1000", "trainer.devices=2", "trainer.progress=false",
                     "trainer.plots=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    assert out.code == 0, out.err[-2000:]
    summary = read_json(tmp_path / "run" / "summary.json")
    assert (summary["devices"], summary["steps_done"]) == (2, (20000 - 200) // 128)


def test_auto_splits_over_the_cpu_cores_when_they_divide_the_batch(monkeypatch) -> None:
    assert len(jax.local_devices()) == 2
    assert batch_mesh(None, 128).size == 2  # null: auto
    assert batch_mesh(None, 125) is None  # does not divide
    assert batch_mesh(None, 128, vectorized=True) is None  # a vmapped group stays on one device
    assert batch_mesh(1, 128) is None
    assert batch_mesh(2, 128).size == 2
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert batch_mesh(None, 128) is None  # auto is for CPU cores only; a number asks on any backend


def test_only_trials_that_ask_for_several_devices_are_not_vectorised() -> None:
    from experiments.sweep.vectorized import _loop_reason, experiment

    assert "trainer.devices" in _loop_reason(experiment("lstm_mnist", ("trainer.devices=2",)))
    assert _loop_reason(experiment("lstm_mnist", ("trainer.devices=1",))) == ""
    assert _loop_reason(experiment("lstm_mnist", ())) == ""  # null (auto): a vmapped group on one device


@pytest.mark.parametrize("value, fragments", [
    ("3", ("trainer.batch_size=128", "trainer.devices=3", "divisible by 3")),
    ("4", ("trainer.devices=4", "has 2 cpu device(s)", "at most 2")),
    ("0", ("'trainer.devices'", ">= 1 or null")),
])
def test_a_bad_device_count_is_one_line_before_a_run_exists(nnrun_main, outputs: Path, value: str,
                                                            fragments: tuple) -> None:
    out = nnrun_main("train", "conf=lstm_mnist", f"trainer.devices={value}")
    assert_one_line_error(out, *fragments)
    assert not (outputs / "lstm_mnist").exists()
