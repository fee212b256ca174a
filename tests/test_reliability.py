"""Reliability (issue 14): one writer per run and sweep directory, a full disk, resuming a
finished run, random kills.

Written against the command line and the files a run leaves (summary.json,
metrics.jsonl, checkpoints/), not the training loop's internals. Metrics records are
compared without their time-like fields (wall clock, throughput), whatever the other
fields are called.
"""
from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from conftest import (
    NNRUN,
    TINY,
    TINY_STEPS,
    Outcome,
    assert_one_line_error,
    proc_env,
    read_json,
    read_metrics,
    tree_files,
)

LOCK = ".nnrun.lock"
STEPS_PER_EPOCH = TINY_STEPS // 2


# ---------------------------------------------------------------------------- helpers


def is_timelike(key: str) -> bool:
    """Fields that differ between two runs of the same config: clocks and throughputs."""
    return (key in ("time", "wall_time_s", "started_at", "finished_at", "first_chunk_s")
            or key.endswith(("_per_s", "_at", "_time", "_time_s")) or "wall" in key)


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not is_timelike(k)}


def assert_close(a, b, path: str = "") -> None:
    """Equal structures; floats equal to 1e-6 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, f"{path}: {a} != {b}"
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_same_metrics(run_dir: Path, reference_dir: Path) -> None:
    """The same records, in the same order, as the reference run's, time-like fields aside:
    nothing lost, nothing repeated."""
    ours = [comparable(r) for r in read_metrics(run_dir)]
    theirs = [comparable(r) for r in read_metrics(reference_dir)]
    assert [(r.get("split"), r.get("step")) for r in ours] == [(r.get("split"), r.get("step")) for r in theirs]
    for a, b in zip(ours, theirs):
        assert_close(a, b, f"metrics[{a.get('split')}@{a.get('step')}]")


def assert_same_results(run_dir: Path, reference_dir: Path) -> None:
    ours, theirs = read_json(run_dir / "summary.json"), read_json(reference_dir / "summary.json")
    assert ours["status"] == theirs["status"] == "completed"
    for key in ("steps_done", "epochs_done", "test", "best", "final"):
        assert_close(ours.get(key), theirs.get(key), key)
    assert_same_metrics(run_dir, reference_dir)
    for which in ("last", "best"):
        assert checkpoint_steps(run_dir, which)[-1:] == checkpoint_steps(reference_dir, which)[-1:], which


def checkpoint_steps(run_dir: Path, which: str = "last") -> list[int]:
    root = Path(run_dir) / "checkpoints" / which
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def partial_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories being written (or left half-written): <which>/<step>.orbax-checkpoint-tmp*."""
    found = []
    for which in ("last", "best"):
        try:
            found += [Path(e.path) for e in os.scandir(Path(run_dir) / "checkpoints" / which)
                      if "orbax-checkpoint-tmp" in e.name]
        except OSError:
            pass
    return found


def metrics_file_is_whole(run_dir: Path) -> None:
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    assert text.endswith("\n"), "a half line at the end of metrics.jsonl"
    for line in text.splitlines():
        json.loads(line)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(NNRUN), *args], cwd=cwd, env=proc_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> Outcome:
    out, err = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, out, err)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def lock_holder(directory: Path) -> Optional[int]:
    try:
        text = (directory / LOCK).read_text().split()
    except OSError:
        return None
    return int(text[0]) if text else None


def wait_until(predicate, proc: subprocess.Popen, what: str, timeout: float = 120, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(poll)


# ---------------------------------------------------------------------------- 1. one writer per directory


def test_a_second_writer_of_a_run_fails_at_once_and_the_first_is_untouched(tmp_path: Path) -> None:
    """Process A trains; meanwhile `train resume=` and `eval` of the same directory (B, C)
    each fail with one line naming the directory and A's pid, while A keeps running;
    A's files show one writer: every record once, in order."""
    run_dir = tmp_path / "run"
    a = start("train", "conf=lenet5", *TINY, "trainer.epochs=1000", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    try:
        wait_until(lambda: lock_holder(run_dir) == a.pid and (run_dir / "metrics.jsonl").is_file(), a,
                   "lock held by the training process and a first metrics record")
        hydra_before = tree_files(run_dir / ".hydra")
        b = start("train", f"resume={run_dir}", cwd=tmp_path)
        c = start("eval", str(run_dir), cwd=tmp_path)
        second, third = finish(b, 120), finish(c, 120)
        assert a.poll() is None, "the first process should still be training"
        for outcome in (second, third):
            assert_one_line_error(outcome, f"run directory {run_dir} is in use by process {a.pid}")
        assert tree_files(run_dir / ".hydra") == hydra_before  # B stopped before Hydra wrote anything
        assert not (run_dir / "eval.json").exists()
        a.send_signal(signal.SIGTERM)  # a checkpoint, then exit 130
        first = finish(a, 120)
    finally:
        stop(a)
    assert first.code == 130, first.err
    assert read_json(run_dir / "summary.json")["status"] == "interrupted"
    records = read_metrics(run_dir)
    for split in ("train", "val"):
        steps = [r["step"] for r in records if r["split"] == split]
        assert steps == sorted(set(steps)), f"{split} records repeated or out of order: {steps}"
    assert lock_holder(run_dir) is None  # released (and its text cleared) on the way out


def test_a_second_sweep_in_a_running_sweep_directory_fails_at_once(tmp_path: Path) -> None:
    """`nnrun sweep --resume DIR` while another `nnrun sweep` runs DIR: one line naming
    the directory and the pid holding it; a new sweep into DIR is refused too; the
    running sweep goes on."""
    sweep_dir = tmp_path / "sweep"
    a = start("sweep", "conf=lenet5", "seed=0,1", *TINY, "trainer.epochs=1000", f"hydra.sweep.dir={sweep_dir}",
              cwd=tmp_path)
    try:
        wait_until(lambda: lock_holder(sweep_dir) == a.pid and (sweep_dir / "sweep.json").is_file(), a,
                   "the sweep directory locked by the sweep")
        b = start("sweep", "--resume", str(sweep_dir), cwd=tmp_path)
        c = start("sweep", "conf=lenet5", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
        second, third = finish(b, 120), finish(c, 120)
        assert a.poll() is None, "the first sweep should still be running"
        assert_one_line_error(second, f"sweep directory {sweep_dir} is in use by process {a.pid}")
        assert_one_line_error(third, f"sweep directory {sweep_dir} already exists and is not empty")
        a.send_signal(signal.SIGINT)  # the sweep checkpoints its trial and exits 130
        first = finish(a, 180)
    finally:
        stop(a)
    assert first.code == 130, first.out + first.err
    assert lock_holder(sweep_dir) is None


@pytest.mark.slow
def test_eval_of_a_trial_refuses_while_its_vectorised_group_trains(tmp_path: Path) -> None:
    """The trials of a vectorised group hold their own run locks while the group trains."""
    sweep_dir = tmp_path / "sweep"
    a = start("sweep", "conf=mlp_mnist", "seed=0,1", *TINY, "trainer.epochs=1000", "--vectorize",
              f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    try:
        trial = sweep_dir / "000"
        wait_until(lambda: lock_holder(trial) == a.pid and (trial / "checkpoints" / "last").is_dir(), a,
                   "the group's first checkpoint")
        assert_one_line_error(finish(start("eval", str(trial), "--last", cwd=tmp_path), 120),
                              f"run directory {trial} is in use by process {a.pid}")
        a.send_signal(signal.SIGINT)
        assert finish(a, 180).code == 130
    finally:
        stop(a)
    assert lock_holder(trial) is None


HOLDER = """
import os, sys
from experiments.locks import hold
lock = hold(sys.argv[1], sys.argv[2]).acquire()
print("locked", flush=True)
sys.stdin.readline()
os.kill(os.getpid(), 9)
"""


def test_a_lock_held_by_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    """kill -9 leaves no stale lock: the OS drops it with the process (the lock file, with
    the dead holder's pid in it, stays and means nothing)."""
    from experiments.errors import UserError
    from experiments.locks import DirectoryBusy, hold

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "sweep"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=proc_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryBusy) as busy:
            hold(tmp_path, "sweep").acquire()
        assert isinstance(busy.value, UserError)
        assert f"sweep directory {tmp_path} is in use by process {holder.pid}" in str(busy.value)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == -signal.SIGKILL
    finally:
        stop(holder)
    assert lock_holder(tmp_path) == holder.pid  # its text is still there ...
    with hold(tmp_path, "sweep"):  # ... and the lock is free
        assert lock_holder(tmp_path) == os.getpid()
    assert lock_holder(tmp_path) is None


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    from experiments.locks import hold, holds, only_lock_files

    with hold(tmp_path / "d"):
        assert holds(tmp_path / "d") and only_lock_files(tmp_path / "d")
        with hold(tmp_path / "d"):  # the CLI holds it, then the runner takes it again
            pass
        assert holds(tmp_path / "d")
    assert not holds(tmp_path / "d")
    (tmp_path / "d" / "x").write_text("x")
    assert not only_lock_files(tmp_path / "d")


# ---------------------------------------------------------------------------- 2. a full disk


def _unshare_prefix() -> Optional[list[str]]:
    """How to get a private mount namespace here (to mount a small tmpfs), or None."""
    if not shutil.which("unshare"):
        return None
    candidates = [["unshare", "--mount", "--propagation", "private"]] if os.geteuid() == 0 else []
    candidates.append(["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"])
    for prefix in candidates:
        probe = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {os.devnull} 2>/dev/null; "
                                "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return prefix
    return None


def _disk_usage(paths) -> int:
    """Bytes a set of files takes on a filesystem with 4 KiB pages (tmpfs), directories included."""
    total = 0
    for p in paths:
        total += 4096 if p.is_dir() else -(-p.stat().st_size // 4096) * 4096
    return total


def test_a_full_disk_fails_in_one_line_and_the_run_resumes_after_freeing_space(trained_run: dict,
                                                                                tmp_path: Path) -> None:
    """The run directory on a tmpfs with room for two checkpoints and a half: the third
    save fails. One line names the device, the last good checkpoint and `resume=`; the
    partial checkpoint is gone; summary.json and metrics.jsonl are whole. With the
    filesystem grown, `train resume=` ends exactly like an uninterrupted run."""
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("cannot mount a small tmpfs here (needs root or unprivileged user namespaces with unshare)")
    reference = trained_run["dir"]  # TINY, seed 0, uninterrupted (plots on: no effect on the numbers)
    checkpoint = _disk_usage((reference / "checkpoints" / "last" / str(STEPS_PER_EPOCH)).rglob("*"))
    others = _disk_usage(p for p in reference.rglob("*") if "checkpoints" not in p.parts and "plots" not in p.parts)
    size_kib = (others + 64 * 1024 + int(2.5 * checkpoint)) // 1024
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    run_dir = mnt / "run"
    args = " ".join(f"'{a}'" for a in [*TINY, f"hydra.run.dir={run_dir}"])
    script = f"""
        mount -t tmpfs -o size={size_kib}k tmpfs '{mnt}' || exit 97
        '{NNRUN}' train conf=lenet5 {args} > '{out}/1.out' 2> '{out}/1.err'; echo $? > '{out}/1.rc'
        cp -a '{run_dir}' '{out}/full'
        mount -o remount,size=64m '{mnt}' || exit 98
        '{NNRUN}' train resume='{run_dir}' > '{out}/2.out' 2> '{out}/2.err'; echo $? > '{out}/2.rc'
        cp -a '{run_dir}' '{out}/resumed'
    """
    done = subprocess.run([*prefix, "sh", "-c", script], cwd=tmp_path, env=proc_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    full = Outcome(int((out / "1.rc").read_text()), (out / "1.out").read_text(), (out / "1.err").read_text())
    assert full.code != 0, f"the run fitted in {size_kib} KiB; no full disk was tested:\n{full.out}"
    line = assert_one_line_error(full, f"no space left on the device holding {run_dir}",
                                 f"nnrun train resume={run_dir}")
    saved = out / "full"
    good = checkpoint_steps(saved)
    assert good, "no checkpoint survived"
    assert f"the last good checkpoint is {run_dir}/checkpoints/last/{good[-1]} (step {good[-1]})" in line
    assert not partial_checkpoints(saved), partial_checkpoints(saved)
    summary = read_json(saved / "summary.json")
    assert summary["status"] == "failed" and "no space left" in summary["error"]
    metrics_file_is_whole(saved)

    resumed = Outcome(int((out / "2.rc").read_text()), (out / "2.out").read_text(), (out / "2.err").read_text())
    assert resumed.code == 0, resumed.out + resumed.err
    assert read_json(out / "resumed" / "summary.json")["resumed"] is True
    assert_same_results(out / "resumed", reference)


def _fake_run(tmp_path: Path):
    from experiments.runs import Run

    run = Run(tmp_path / "run")
    (run.dir / "checkpoints" / "last" / "15").mkdir(parents=True)
    (run.dir / "checkpoints" / "last" / "30.orbax-checkpoint-tmp").mkdir()  # a partial save is no good one
    return run


@pytest.fixture
def enospc_after(monkeypatch: pytest.MonkeyPatch):
    """Make os.write write `n` bytes, then fail with ENOSPC (a disk that fills mid-write)."""
    real_write = os.write

    def arm(n: int) -> None:
        budget = {"left": n}

        def write(fd, data):
            if budget["left"] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            k = real_write(fd, bytes(data[:budget["left"]]))
            budget["left"] -= k
            return k

        monkeypatch.setattr(os, "write", write)

    return arm


def test_a_metrics_record_that_hits_a_full_disk_leaves_no_half_line(tmp_path: Path, enospc_after) -> None:
    from experiments.runs import DiskFullError

    run = _fake_run(tmp_path)
    run.log_metrics({"step": 5, "split": "train", "loss": 1.0})
    before = (run.dir / "metrics.jsonl").read_bytes()
    enospc_after(7)  # part of the next line gets onto the disk, then ENOSPC
    with pytest.raises(DiskFullError) as err:
        run.log_metrics({"step": 10, "split": "train", "loss": 0.5})
    assert (run.dir / "metrics.jsonl").read_bytes() == before
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"no space left on the device holding {run.dir}")
    assert f"the last good checkpoint is {run.dir}/checkpoints/last/15 (step 15)" in message
    assert f"`nnrun train resume={run.dir}`" in message
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC


def test_a_summary_that_hits_a_full_disk_keeps_the_previous_one(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.runs import DiskFullError

    run = _fake_run(tmp_path)
    run.write_summary({"status": "running"})
    before = (run.dir / "summary.json").read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError, match="could not write .*summary.json; the last good checkpoint"):
        run.write_summary({"status": "completed", "x": "y" * 10000})
    assert (run.dir / "summary.json").read_bytes() == before
    assert sorted(p.name for p in run.dir.iterdir()) == ["checkpoints", "summary.json"]  # no temp file left
    # as the runner's last word on a failing run: the run's own error is what surfaces
    with pytest.raises(RuntimeError, match="the run's own error"):
        try:
            raise RuntimeError("the run's own error")
        finally:
            run.write_summary({"status": "failed"})
    assert (run.dir / "summary.json").read_bytes() == before


def test_any_atomic_write_on_a_full_disk_names_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.runs import DiskFullError, write_text_atomic

    path = tmp_path / "sweep.json"
    path.write_text("old\n")

    def no_space(fd):  # some filesystems report a full disk only when the data is flushed
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError, match=f"no space left on the device holding {tmp_path}.*run the command again"):
        write_text_atomic(path, "new" * 10000)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]


def test_a_torn_last_line_is_dropped_and_a_damaged_line_named(tmp_path: Path) -> None:
    from experiments.errors import UserError
    from experiments.runs import read_metrics as read

    run = _fake_run(tmp_path)
    path = run.dir / "metrics.jsonl"
    path.write_text('{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 0.5}\n{"step": 15, "lo')  # killed mid-write
    assert [r["step"] for r in read(run.dir)] == [5, 10]
    run.log_metrics({"step": 15, "loss": 0.25})
    assert path.read_text().endswith('{"step": 10, "loss": 0.5}\n{"step": 15, "loss": 0.25}\n')
    assert [r["step"] for r in read(run.dir)] == [5, 10, 15]
    path.write_text('{"step": 5}\n{"step": 10, oops\n{"step": 15}\n')
    with pytest.raises(UserError, match="metrics.jsonl line 2 is not a JSON record"):
        read(run.dir)


def test_a_checkpoint_that_hits_a_full_disk_is_removed_and_named(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The orbax save fails as it does on a full disk (RESOURCE_EXHAUSTED from tensorstore,
    after creating its temporary directory): the partial directory is removed, the good
    checkpoint stays, the error is one line naming it; the failed save's stragglers
    ('Event loop is closed', printed through sys.unraisablehook) are silenced."""
    import numpy as np
    import orbax.checkpoint as ocp

    from experiments.checkpoints import Checkpointer, _closed_loop_filter
    from experiments.runs import DiskFullError

    run_dir = tmp_path / "run"
    state = {"w": np.arange(6, dtype=np.float32)}
    real_save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):
        tmp = Path(self.directory) / f"{step}.orbax-checkpoint-tmp" / "default.orbax-checkpoint-tmp"
        tmp.mkdir(parents=True)
        (tmp / "d").write_bytes(b"x" * 1000)
        raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "{tmp}": '
                         "Failed to write 1000 bytes to file 19: No space left on device [os_error_code='28']")

    with Checkpointer(run_dir / "checkpoints", keep=3) as ckpt:
        ckpt.save("last", 15, state)
        monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
        with pytest.raises(DiskFullError) as err:
            ckpt.save("last", 30, state)
        assert not partial_checkpoints(run_dir)
        assert checkpoint_steps(run_dir) == [15]
        assert (f"could not write {run_dir}/checkpoints/last/30; the last good checkpoint is "
                f"{run_dir}/checkpoints/last/15 (step 15)") in str(err.value)
        assert isinstance(err.value.__cause__, ValueError)  # orbax's own error stays in the chain (--debug)

        seen = []
        hook = _closed_loop_filter(lambda u: seen.append(str(u.exc_value)))
        hook(_Unraisable(RuntimeError("Event loop is closed")))
        hook(_Unraisable(RuntimeError("something else")))
        assert seen == ["something else"]  # only that noise is dropped
        assert getattr(sys.unraisablehook, "nnrun_closed_loop_filter", False)  # and it is installed

        def other_failure(self, step, *args, **kwargs):
            (Path(self.directory) / f"{step}.orbax-checkpoint-tmp").mkdir()
            raise ValueError("some other orbax error")

        monkeypatch.setattr(ocp.CheckpointManager, "save", other_failure)
        with pytest.raises(ValueError, match="some other orbax error"):
            ckpt.save("last", 45, state)
        assert not partial_checkpoints(run_dir)
        monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
        ckpt.save("last", 45, state)
    assert checkpoint_steps(run_dir) == [15, 45]


class _Unraisable:
    def __init__(self, exc: BaseException):
        self.exc_type, self.exc_value, self.exc_traceback = type(exc), exc, None
        self.err_msg, self.object = None, None


# ---------------------------------------------------------------------------- 3. resuming a finished run


def test_resume_of_a_completed_run_says_so_and_writes_nothing(nnrun_main, trained_run: dict) -> None:
    run_dir = trained_run["dir"]
    before = tree_files(run_dir)
    for extra in ([], ["trainer.epochs=2"], ["trainer.epochs=1"]):
        outcome = nnrun_main("train", f"resume={run_dir}", *extra)
        assert outcome.code == 0, outcome.err
        assert outcome.err == ""
        text = " ".join(outcome.out.split())
        assert f"run {run_dir} is already complete (2 epochs, {TINY_STEPS} steps" in text
        assert "nothing was written" in text and "trainer.epochs=<more than" in text
        assert "lenet5: completed" not in text  # no table, as if it had trained
    assert tree_files(run_dir) == before


def test_a_completed_run_extended_by_more_epochs_continues_from_its_last_checkpoint(
        nnrun_main, trained_run: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "extended"
    shutil.copytree(trained_run["dir"], run_dir)
    before = read_metrics(run_dir)
    outcome = nnrun_main("train", f"resume={run_dir}", "trainer.epochs=3")
    assert outcome.code == 0, outcome.err
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["resumed"] is True
    assert summary["steps_done"] == TINY_STEPS + STEPS_PER_EPOCH and summary["epochs_done"] == 3
    records = read_metrics(run_dir)
    assert records[:len(before)] == before  # the first two epochs as they were
    assert all(r["step"] > TINY_STEPS for r in records[len(before):])
    assert [r["step"] for r in records if r["split"] == "val"] == [15, 30, 45]
    assert checkpoint_steps(run_dir)[-1] == 45
    assert 0.0 < summary["test"]["accuracy"] <= 1.0
    # and now it is complete at 3 epochs: a plain resume says so
    again = nnrun_main("train", f"resume={run_dir}")
    assert again.code == 0 and "is already complete (3 epochs, 45 steps" in " ".join(again.out.split())


# ---------------------------------------------------------------------------- 4. random kills


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_at_random_moments_then_resume_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL a 4-epoch run at random moments: once while it is still starting up, three
    times while it writes a checkpoint (`last` once, `best` once, and the final epoch's
    `best`), the others at random; resume after each (or, killed before it had a
    checkpoint, start it again); then compare with an uninterrupted run: same metrics
    records (each once), same summary, same last and best checkpoints, and `nnrun eval`
    evaluates the checkpoint the summary calls best."""
    rng = random.Random(14)
    args = [*TINY, "trainer.epochs=4"]
    reference = tmp_path / "reference"
    ref = finish(start("train", "conf=lenet5", *args, f"hydra.run.dir={reference}", cwd=tmp_path), 300)
    assert ref.code == 0, ref.err
    final_step = read_json(reference / "summary.json")["steps_done"]
    assert read_json(reference / "summary.json")["best"]["step"] == final_step  # so the last moment exists

    run_dir = tmp_path / "killed"
    fresh = ["train", "conf=lenet5", *args, f"hydra.run.dir={run_dir}"]
    schedule = ["startup", "random", "checkpoint:last", "random", "checkpoint:best", "random",
                f"checkpoint:best:{final_step}"]
    hits: list[str] = []
    proc = start(*fresh, cwd=tmp_path)
    try:
        for moment in schedule:
            since = time.time_ns()
            if moment == "startup":  # the CLI has locked the directory; Hydra may be writing .hydra/
                wait_until(lambda: lock_holder(run_dir) == proc.pid, proc, "the run's lock", poll=0.005)
            elif moment == "random":
                wait_until(lambda: lock_holder(run_dir) == proc.pid, proc, "the run's lock")
                time.sleep(rng.uniform(0.0, 3.0))
            elif not _wait_for_checkpoint_write(proc, run_dir, *moment.split(":")[1:], since_ns=since):
                break  # it finished first
            if proc.poll() is not None:
                break  # it finished first
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            if moment.startswith("checkpoint") and partial_checkpoints(run_dir):
                hits.append(moment)
            if checkpoint_steps(run_dir):
                proc = start("train", f"resume={run_dir}", cwd=tmp_path)
            else:  # killed before its first checkpoint: nothing to resume, so start again
                refused = finish(start("train", f"resume={run_dir}", cwd=tmp_path), 120)
                assert refused.code != 0 and "Traceback" not in refused.err, refused.err
                shutil.rmtree(run_dir)
                proc = start(*fresh, cwd=tmp_path)
        last = finish(proc, 300)
    finally:
        stop(proc)
    assert last.code == 0, last.err
    assert hits == [m for m in schedule if m.startswith("checkpoint")], f"kills during a checkpoint write: {hits}"
    assert not partial_checkpoints(run_dir)
    assert_same_results(run_dir, reference)
    metrics_file_is_whole(run_dir)
    evaluated = finish(start("eval", str(run_dir), cwd=tmp_path), 120)
    assert evaluated.code == 0, evaluated.err
    assert read_json(run_dir / "eval.json")["step"] == read_json(run_dir / "summary.json")["best"]["step"]


def _wait_for_checkpoint_write(proc: subprocess.Popen, run_dir: Path, which: str, step: Optional[str] = None, *,
                               since_ns: int, timeout: float = 300) -> bool:
    """Until a `which` checkpoint directory (of `step`, if given) is being written (created
    after `since_ns`); False if the process ends first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        for p in partial_checkpoints(run_dir):
            try:
                if (p.parent.name == which and (step is None or p.name.split(".")[0] == step)
                        and p.stat().st_ctime_ns >= since_ns):
                    return True
            except OSError:
                pass  # renamed (finished) between the listing and the stat
        assert time.monotonic() < deadline, f"no '{which}' checkpoint written within {timeout} s"
        time.sleep(0.001)
    return False
