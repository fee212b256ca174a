"""Stopping and resuming runs: a resumed run ends where an uninterrupted one ends, and
SIGTERM stops a run cleanly (checkpoint, 'interrupted' summary) so that it can be resumed."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import (
    NNRUN,
    TINY,
    TINY_STEPS,
    assert_one_line_error,
    proc_env,
    read_json,
    read_metrics,
    restore_raw,
)


def assert_trees_equal(a, b) -> None:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_resumed_run_ends_like_an_uninterrupted_one(nnrun_cli, trained_run: dict, tmp_path: Path) -> None:
    """Stop after 20 of 30 steps (trainer.max_steps=20, mid epoch 2), then resume with the
    cap lifted: same final parameters, optimizer state and test metrics as the session's
    uninterrupted run with the same seed."""
    run_dir = tmp_path / "stopped"
    first = nnrun_cli("train", "conf=lenet5", *TINY, "trainer.max_steps=20", f"hydra.run.dir={run_dir}")
    assert first.code == 0, first.out
    stopped = read_json(run_dir / "summary.json")
    assert stopped["steps_done"] == 20
    assert sorted(int(p.name) for p in (run_dir / "checkpoints" / "last").iterdir()) == [15, 20]

    second = nnrun_cli("train", f"resume={run_dir}", "trainer.max_steps=null")
    assert second.code == 0, second.out
    resumed = read_json(run_dir / "summary.json")
    reference = read_json(trained_run["dir"] / "summary.json")
    assert resumed["status"] == "completed" and resumed["resumed"] is True
    assert resumed["steps_done"] == reference["steps_done"] == TINY_STEPS
    assert resumed["started_at"] == stopped["started_at"]
    assert resumed["wall_time_s"] > stopped["wall_time_s"]
    for metric in ("accuracy", "loss"):
        assert resumed["test"][metric] == pytest.approx(reference["test"][metric], rel=1e-6, abs=1e-6), metric
    assert resumed["final"]["val"]["accuracy"] == pytest.approx(reference["final"]["val"]["accuracy"], abs=1e-6)

    state, step = restore_raw(run_dir / "checkpoints")
    ref_state, ref_step = restore_raw(trained_run["dir"] / "checkpoints")
    assert step == ref_step == TINY_STEPS
    assert_trees_equal(state["inner"]["params"], ref_state["inner"]["params"])
    assert_trees_equal(state["inner"]["opt_state"], ref_state["inner"]["opt_state"])

    # the metrics after the resume point repeat the uninterrupted run's
    def train_losses(d: Path) -> dict:
        return {r["step"]: r["loss"] for r in read_metrics(d) if r["split"] == "train"}

    ours, theirs = train_losses(run_dir), train_losses(trained_run["dir"])
    assert sorted(ours) == sorted(theirs)
    for s in (25, 30):
        assert ours[s] == pytest.approx(theirs[s], rel=1e-6)

    # the capped run's partial-epoch validation (step 20) is not a record nor a best
    # candidate of the continued run: records, best and the best checkpoint are the
    # uninterrupted run's
    assert val_records(run_dir) == val_records(trained_run["dir"])
    assert resumed["best"] == pytest.approx(reference["best"], rel=1e-6)
    assert sorted(p.name for p in (run_dir / "checkpoints" / "best").iterdir() if p.name.isdigit()) == \
        [str(reference["best"]["step"])]


def val_records(run_dir: Path) -> list[dict]:
    """Validation records without wall-clock fields."""
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(run_dir) if r["split"] == "val"]


def test_resume_refuses_a_directory_that_is_not_a_run(nnrun_main, tmp_path: Path) -> None:
    assert_one_line_error(nnrun_main("train", f"resume={tmp_path}"), "not an nnrun run directory")


def test_resume_refuses_another_experiment(nnrun_main, trained_run: dict) -> None:
    assert_one_line_error(nnrun_main("train", "conf=lstm_mnist", f"resume={trained_run['dir']}"),
                          "run of 'lenet5'", "drop conf=")


def test_resume_of_a_run_without_checkpoint_is_an_error(nnrun_main, tmp_path: Path) -> None:
    """A run that failed before its first checkpoint (here: its data directory is empty)."""
    run_dir, empty = tmp_path / "failed-early", tmp_path / "no-data"
    empty.mkdir()
    assert_one_line_error(nnrun_main("train", "conf=lenet5", *TINY, f"data.root={empty}", f"hydra.run.dir={run_dir}"),
                          "does not exist")
    assert read_json(run_dir / "summary.json")["status"] == "failed"
    assert_one_line_error(nnrun_main("train", f"resume={run_dir}", "data.root=null"),
                          "no checkpoint in checkpoints/last")


def test_sigterm_stops_cleanly_and_the_run_resumes(nnrun_cli, nnrun_main, tmp_path: Path) -> None:
    """`kill -TERM` mid-run: exit 130 at the next step, a checkpoint, status 'interrupted';
    then `nnrun train resume=DIR` finishes the run."""
    run_dir = tmp_path / "run"
    # 40 steps of 250 images (5-10 s on 2 idle CPU cores), a metrics record after every step
    args = ["train", "conf=lenet5", "data.train_subset=5500", "data.val_size=500", "data.test_subset=1000",
            "trainer.epochs=2", "trainer.batch_size=250", "trainer.log_every=1", "trainer.progress=false",
            "trainer.plots=false", f"hydra.run.dir={run_dir}"]
    total_steps = 40
    proc = subprocess.Popen([str(NNRUN), *args], cwd=tmp_path, env=proc_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 90
        while not (metrics.exists() and metrics.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no metrics record within 90 s"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        stop_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert stop_s < 10, f"took {stop_s:.1f} s to stop"
    assert "lenet5: interrupted" in out
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    assert "test" not in summary
    stopped_at = summary["steps_done"]
    assert 1 <= stopped_at < total_steps
    assert (run_dir / "checkpoints" / "last" / str(stopped_at)).is_dir()
    assert max(r["step"] for r in read_metrics(run_dir)) == stopped_at

    if not (run_dir / "checkpoints" / "best").is_dir():  # stopped inside the first epoch
        assert_one_line_error(nnrun_main("eval", str(run_dir)), "no 'best' checkpoint", "--last")

    result = nnrun_cli("train", f"resume={run_dir}")
    assert result.code == 0, result.out
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["resumed"] is True
    assert summary["steps_done"] == total_steps
    assert 0.0 < summary["test"]["accuracy"] <= 1.0
    train_steps = [r["step"] for r in read_metrics(run_dir) if r["split"] == "train"]
    assert train_steps == list(range(1, total_steps + 1))  # no step lost or repeated across the resume
    assert [r["step"] for r in read_metrics(run_dir) if r["split"] == "val"] == [20, 40]


# ---------------------------------------------------------------------------- signal plumbing


def test_stop_request_turns_sigterm_into_a_flag_and_restores_the_handler() -> None:
    from experiments.runs import StopRequest

    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop and stop.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_ctrl_c_stops_at_once() -> None:
    from experiments.runs import StopRequest

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)


def test_keyboard_interrupt_exits_130(capsys: pytest.CaptureFixture) -> None:
    from cli.errors import report

    assert report(KeyboardInterrupt(), debug=False) == 130
    assert capsys.readouterr().err.strip() == "nnrun: interrupted"
