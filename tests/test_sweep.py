"""`nnrun sweep` as a user drives it: the grammar, sweep YAMLs, dry runs, parallel trials,
failures, resume, Optuna, and the errors.

Unit tests (no processes) cover expansion and parsing. The sweeps that run trials spawn
real `nnrun train` processes (about 10-15 s each on a 2-core CPU, more under load): the
default run starts nine; the signal test is marked slow.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from conftest import NNRUN, assert_one_line_error, proc_env, read_json, tree_files

# 800 train / 200 val / 500 test images, 8 steps: a trial is mostly start-up and compilation
TINY = ["data.train_subset=1000", "data.val_size=200", "data.test_subset=500", "trainer.epochs=1",
        "trainer.batch_size=100", "trainer.log_every=5", "trainer.plots=false"]
NAN_LR = "inf"  # Adam with an infinite learning rate: the loss is NaN at the first update, always


def sweep_dirs(outputs: Path, conf: str = "lenet5") -> list[Path]:
    root = outputs / conf / "sweeps"
    return sorted(root.iterdir()) if root.is_dir() else []


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------------------- grammar (no processes)


def test_grid_expands_like_hydras_basic_sweeper() -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from experiments.sweep import spec as spec_mod

    overrides = ["optim.lr=0.1,0.03,0.01", "seed=0,1", "optim=adam,sgd", "trainer.epochs=1",
                 "seed=range(0,3)", "+data.train_subset=100"]  # the second seed= replaces the first, in place
    spec = spec_mod.build("lenet5", overrides)
    trials = spec_mod.grid(spec)
    assert len(trials) == 3 * 3 * 2
    assert [t.id for t in trials] == [f"{i:03d}" for i in range(18)]
    assert [p.name for p in spec.params] == ["optim.lr", "seed", "optim"]
    assert spec.fixed == ["trainer.epochs=1", "+data.train_subset=100"]
    assert trials[0].params == {"optim.lr": 0.1, "seed": 0, "optim": "adam"}
    assert trials[-1].params == {"optim.lr": 0.01, "seed": 2, "optim": "sgd"}

    parsed = OverridesParser.create().parse_overrides(overrides)
    hydra_batches = BasicSweeper.split_arguments(parsed, None)[0]
    assert [sorted(b) for b in hydra_batches] == [sorted(t.overrides) for t in trials]  # same trials, same order


def test_range_choice_interval_and_group_choices_parse_with_hydras_grammar() -> None:
    from experiments.sweep import spec as spec_mod

    fixed, params = spec_mod.split(["seed=range(1,7,2)", "model.cell=choice(lstm,gru)", "optim=glob(adam*)",
                                    "optim.lr=tag(log, interval(1e-4, 1e-1))", "optim.b1=interval(0.8,0.9)",
                                    "trainer.epochs=2"])
    by_name = {p.name: p for p in params}
    assert fixed == ["trainer.epochs=2"]
    assert by_name["seed"].kind == "range" and by_name["seed"].values == [1, 3, 5]
    assert by_name["model.cell"].values == ["lstm", "gru"]
    assert by_name["optim"].values == ["adam", "adamw"]  # glob over the config group's options
    lr = by_name["optim.lr"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("interval", 1e-4, 1e-1, True)
    assert by_name["optim.b1"].log is False  # log scale only when asked for


def test_sweep_yaml_descriptions() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from experiments.sweep import search, spec as spec_mod

    lr = spec_mod.build("lenet5", ["sweep=lenet5_lr"])
    assert (lr.search, lr.metric, lr.direction, lr.vectorize) == ("grid", "best.accuracy", "max", False)
    trials = spec_mod.grid(lr)
    assert len(trials) == 9 and {p.name for p in lr.params} == {"optim.lr", "seed"}
    assert not any(o.startswith("sweep") for t in trials for o in t.overrides)  # sweep= never reaches train

    narrowed = spec_mod.build("lenet5", ["sweep=lenet5_lr", "seed=0,1", "trainer.epochs=1"])
    assert len(spec_mod.grid(narrowed)) == 6 and "trainer.epochs=1" in narrowed.fixed  # the command line wins

    rnd = spec_mod.build("lenet5", ["sweep=lenet5_random"])
    assert (rnd.search, rnd.budget) == ("random", 8)
    params = {p.name: p for p in rnd.params}
    assert params["optim.lr"].kind == "interval" and params["optim.lr"].log
    assert params["trainer.batch_size"].values == [64, 128, 256] and params["optim"].values == ["adam", "adamw"]
    assert "trainer.epochs=4" in rnd.fixed

    opt = spec_mod.build("lenet5", ["sweep=lenet5_optuna", "sweep.budget=3"])
    assert (opt.search, opt.budget, opt.direction) == ("optuna", 3, "max")
    dists = {p.name: search.distribution(p) for p in opt.params}
    assert isinstance(dists["optim.lr"], FloatDistribution) and dists["optim.lr"].log
    assert isinstance(dists["trainer.batch_size"], CategoricalDistribution)


def test_random_search_is_reproducible_from_the_sweep_seed() -> None:
    from experiments.sweep import search, spec as spec_mod

    spec = spec_mod.build("lenet5", ["sweep=lenet5_random"])
    first, again = search.random_trials(spec, 0, 8), search.random_trials(spec, 0, 8)
    assert first == again
    assert search.random_trials(spec, 0, 10)[:8] == first  # a larger budget keeps the first trials
    assert len({json.dumps(t.params, sort_keys=True) for t in first}) == 8
    for t in first:
        assert 0.0003 <= t.params["optim.lr"] <= 0.01 and t.params["optim"] in ("adam", "adamw")
    other = spec_mod.build("lenet5", ["sweep=lenet5_random", "sweep.seed=1"])
    assert search.random_trials(other, 0, 8) != first


def test_trial_outcome_without_a_summary_names_the_exit_code_and_last_error(tmp_path: Path) -> None:
    from experiments.sweep.results import outcome

    log = tmp_path / "000.log"
    log.write_text("\n".join(["$ python -m cli.main train ...", "nnrun: error: something broke", "exiting", ""]))
    result = outcome(tmp_path / "000", "best.accuracy", 2, log)
    assert result["status"] == "failed" and result["error"] == "exit code 2: nnrun: error: something broke"
    assert outcome(tmp_path / "000", "best.accuracy", -signal.SIGKILL, log)["status"] == "interrupted"


# ---------------------------------------------------------------------------- dry run and errors


def test_dry_run_lists_the_trials_and_creates_nothing(nnrun_main, outputs: Path, tmp_path: Path) -> None:
    result = nnrun_main("sweep", "conf=lenet5", "optim.lr=0.1,0.01", "seed=0,1", "trainer.epochs=1", "--dry-run")
    assert result.code == 0, result.err
    assert "4 trials" in result.out and "every trial: trainer.epochs=1" in result.out
    for i, overrides in enumerate(["optim.lr=0.1 seed=0", "optim.lr=0.1 seed=1", "optim.lr=0.01 seed=0",
                                   "optim.lr=0.01 seed=1"]):
        line = next(ln for ln in result.out.splitlines() if f"│ {i} " in ln)
        assert f"{i:03d}" in line and overrides in line and f"/{i:03d}" in line
    assert not outputs.exists() and list(tmp_path.iterdir()) == []


def test_dry_run_of_a_random_search_shows_the_same_trials_twice(nnrun_main) -> None:
    outs = [nnrun_main("sweep", "conf=lenet5", "sweep=lenet5_random", "--dry-run") for _ in range(2)]
    assert all(o.code == 0 for o in outs), outs[0].err
    assert "8 trials" in outs[0].out
    rows = [[ln.split("│")[3] for ln in o.out.splitlines() if ln.count("│") > 4] for o in outs]
    assert rows[0] == rows[1] and len(rows[0]) >= 8


SWEEP_ERRORS = {
    "unknown experiment": (["conf=nope", "optim.lr=0.1,0.01"], ["unknown experiment 'nope'"]),
    "unknown swept key": (["conf=lenet5", "optim.lrr=0.1,0.01"], ["unknown config key 'optim.lrr'"]),
    "unknown group choice": (["conf=lenet5", "optim=adam,nope"], ["optim/nope", "available"]),
    "bad value up front": (["conf=lenet5", "optim.lr=0.1,-1"], ["trial 001", "optim.lr"]),
    "unknown sweep yaml": (["conf=lenet5", "sweep=nope"], ["unknown sweep 'nope'", "lenet5_lr"]),
    "jobs 0": (["conf=lenet5", "optim.lr=0.1,0.01", "--jobs", "0"], ["--jobs"]),
    "interval in a grid": (["conf=lenet5", "optim.lr=interval(0.001,0.1)"], ["interval()", "sweep.search"]),
    "nothing swept": (["conf=lenet5", "optim.lr=0.1"], ["nothing to sweep"]),
    "bad grammar": (["conf=lenet5", "optim.lr=0.1,,0.2"], ["bad override 'optim.lr=0.1,,0.2'"]),
}


@pytest.mark.parametrize("args, fragments", SWEEP_ERRORS.values(), ids=SWEEP_ERRORS.keys())
def test_bad_sweep_input_is_one_line_and_creates_nothing(nnrun_main, outputs: Path, args, fragments) -> None:
    outcome = nnrun_main("sweep", *args)
    assert outcome.code == 2
    assert_one_line_error(outcome, *fragments)
    assert not outputs.exists()


def test_resume_of_a_directory_that_is_no_sweep_is_an_error(nnrun_main, tmp_path: Path) -> None:
    outcome = nnrun_main("sweep", "--resume", str(tmp_path))
    assert outcome.code == 2
    assert_one_line_error(outcome, "not a sweep directory")


# ---------------------------------------------------------------------------- sweeps that train


def test_parallel_sweep_over_seeds_then_resume_an_interrupted_trial(nnrun_main, outputs: Path) -> None:
    result = nnrun_main("sweep", "conf=lenet5", "seed=0,1", "optim.lr=0.003", *TINY, "--jobs", "2")
    assert result.code == 0, result.out + result.err
    [sweep_dir] = sweep_dirs(outputs)
    rows = read_csv(sweep_dir / "results.csv")
    assert [r["id"] for r in rows] == ["000", "001"] and [r["seed"] for r in rows] == ["0", "1"]
    assert all(r["status"] == "completed" and 0.0 < float(r["best.accuracy"]) <= 1.0 for r in rows)
    assert set(rows[0]) == {"id", "seed", "status", "best.accuracy", "test.accuracy", "wall_time_s", "run_dir", "error"}

    spec = read_json(sweep_dir / "sweep.json")
    assert spec["status"] == "completed" and spec["conf"] == "lenet5" and spec["metric"] == "best.accuracy"
    assert [t["overrides"][-1] for t in spec["trials"]] == ["seed=0", "seed=1"]
    summaries = [read_json(sweep_dir / i / "summary.json") for i in ("000", "001")]
    assert [s["seed"] for s in summaries] == [0, 1]
    assert summaries[0]["started_at"] <= summaries[1]["finished_at"]  # the two ran at the same time
    assert summaries[1]["started_at"] <= summaries[0]["finished_at"]
    assert (sweep_dir / "logs" / "000.log").is_file() and not (sweep_dir / "000" / "logs").exists()

    [agg] = read_csv(sweep_dir / "aggregate.csv")
    metrics = [float(r["best.accuracy"]) for r in rows]
    assert int(agg["n"]) == 2 and float(agg["mean"]) == pytest.approx(sum(metrics) / 2)
    assert agg["seeds"] == "0 1" and float(agg["std"]) >= 0
    assert not (sweep_dir / "plots" / "metric_vs_seed.png").exists()  # seeds are averaged over, not plotted against
    assert "over seeds" in result.out
    assert "nnrun train conf=lenet5" in result.out and "best trial" in result.out

    # trial 001 as if the sweep had been stopped mid-run: resume continues it from its checkpoint
    summary_path = sweep_dir / "001" / "summary.json"
    summary = read_json(summary_path)
    summary_path.write_text(json.dumps({**summary, "status": "interrupted"}))
    before = tree_files(sweep_dir / "000")
    result = nnrun_main("sweep", "--resume", str(sweep_dir))
    assert result.code == 0, result.out + result.err
    assert "[001] resumed" in result.out and "[000] started" not in result.out and "[000] resumed" not in result.out
    assert read_json(summary_path)["status"] == "completed" and read_json(summary_path)["resumed"] is True
    assert tree_files(sweep_dir / "000") == before
    assert not list(sweep_dir.glob("*.failed-*"))


def test_a_failing_trial_is_recorded_and_resume_reruns_only_it(nnrun_main, outputs: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "experiments.sweep.vectorized", None)  # as if not installed: import fails
    result = nnrun_main("sweep", "conf=lenet5", f"optim.lr=0.003,{NAN_LR}", *TINY, "--jobs", "2", "--vectorize")
    assert result.code == 1, result.out + result.err
    assert "note: vectorized trials are not available" in result.out
    [sweep_dir] = sweep_dirs(outputs)
    rows = {r["id"]: r for r in read_csv(sweep_dir / "results.csv")}
    assert rows["000"]["status"] == "completed" and float(rows["000"]["best.accuracy"]) > 0
    assert rows["001"]["status"] == "failed" and "non-finite" in rows["001"]["error"]
    assert rows["001"]["best.accuracy"] == ""
    assert read_json(sweep_dir / "sweep.json")["status"] == "failed"
    assert "continue it with: nnrun sweep --resume" in result.out

    completed = sweep_dir / "000"
    files, times = tree_files(completed), mtimes(completed)
    result = nnrun_main("sweep", "--resume", str(sweep_dir), "--jobs", "2")
    assert result.code == 1, result.out + result.err  # the value still fails
    assert "[001] started" in result.out and "[000] started" not in result.out
    assert tree_files(completed) == files and mtimes(completed) == times
    old = sweep_dir / "001.failed-1"
    assert read_json(old / "summary.json")["status"] == "failed"  # nothing is lost
    assert read_json(sweep_dir / "001" / "summary.json")["status"] == "failed"
    record = read_json(sweep_dir / "sweep.json")["trials"][1]
    assert record["status"] == "failed" and record["previous_dirs"] == [str(old)]
    assert (sweep_dir / "logs" / "001.log").read_text().count("$ ") == 2


@pytest.mark.slow  # an Optuna study over real trials, then a resume: ~43 s
def test_optuna_search_persists_its_study_and_resume_extends_the_budget(nnrun_main, outputs: Path) -> None:
    import optuna

    args = ["conf=lenet5", "optim.lr=tag(log, interval(0.0003, 0.01))", "sweep.search=optuna", "sweep.budget=3",
            *TINY]
    result = nnrun_main("sweep", *args, "--jobs", "2")
    assert result.code == 0, result.out + result.err
    [sweep_dir] = sweep_dirs(outputs)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal")))
    study = optuna.load_study(study_name="nnrun", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    records = read_json(sweep_dir / "sweep.json")["trials"]
    assert [r["id"] for r in records] == ["000", "001", "002"]
    for r in records:
        t = study.trials[r["optuna_number"]]
        assert t.params["optim.lr"] == r["params"]["optim.lr"] and t.value == pytest.approx(r["metric"])
        assert 0.0003 <= r["params"]["optim.lr"] <= 0.01
    before = {i: tree_files(sweep_dir / i) for i in ("000", "001", "002")}

    result = nnrun_main("sweep", "--resume", str(sweep_dir), "sweep.budget=4")
    assert result.code == 0, result.out + result.err
    study = optuna.load_study(study_name="nnrun", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert len(read_csv(sweep_dir / "results.csv")) == 4
    assert {i: tree_files(sweep_dir / i) for i in before} == before


# ---------------------------------------------------------------------------- vectorized and launcher hooks


def _fake_summaries(sweep_dir: Path, trials, metric: float = 0.5) -> None:
    for t in trials:
        (sweep_dir / t.id).mkdir(parents=True)
        (sweep_dir / t.id / "summary.json").write_text(json.dumps(
            {"status": "completed", "best": {"accuracy": metric}, "test": {"accuracy": metric}, "wall_time_s": 1.0}))


def test_vectorized_groups_and_hydra_launchers_are_called_with_the_trials(nnrun_main, outputs: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks other modules provide, faked: no training process starts."""
    calls: dict[str, list] = {}

    def plan_vectorized(conf, trials, force):
        calls["plan"] = [conf, [t.id for t in trials], force]
        return [trials], [], ""

    def run_vectorized_group(conf, group, sweep_dir):
        calls["group"] = [t.id for t in group]
        _fake_summaries(sweep_dir, group)

    def run_with_hydra_launcher(conf, trials, sweep_dir, launcher_overrides):
        calls["launcher"] = [[t.overrides for t in trials], launcher_overrides]
        _fake_summaries(sweep_dir, trials, 0.25)

    monkeypatch.setitem(sys.modules, "experiments.sweep.vectorized", types.SimpleNamespace(
        plan_vectorized=plan_vectorized, run_vectorized_group=run_vectorized_group))
    monkeypatch.setitem(sys.modules, "experiments.sweep.launchers", types.SimpleNamespace(
        run_with_hydra_launcher=run_with_hydra_launcher, check_launcher=lambda conf, overrides: "basic"))

    result = nnrun_main("sweep", "conf=lenet5", "sweep=lenet5_lr", "seed=0", "sweep.vectorize=true",
                        "hydra.sweep.dir=" + str(outputs / "vec"))
    assert result.code == 0, result.out + result.err
    assert calls["plan"] == ["lenet5", ["000", "001", "002"], False] and calls["group"] == ["000", "001", "002"]
    assert [r["status"] for r in read_csv(outputs / "vec" / "results.csv")] == ["completed"] * 3

    result = nnrun_main("sweep", "conf=lenet5", "optim.lr=0.1,0.01", "hydra/launcher=basic",
                        "hydra.sweep.dir=" + str(outputs / "launched"))
    assert result.code == 0, result.out + result.err
    assert calls["launcher"] == [[["optim.lr=0.1"], ["optim.lr=0.01"]], ["hydra/launcher=basic"]]
    assert [r["best.accuracy"] for r in read_csv(outputs / "launched" / "results.csv")] == ["0.25", "0.25"]

    (outputs / "launched" / ".lock").write_text(f"{os.getppid()}\n")  # a live process runs it
    assert_one_line_error(nnrun_main("sweep", "--resume", str(outputs / "launched")), "is being run by process")


# ---------------------------------------------------------------------------- signals


@pytest.mark.slow
def test_sigint_stops_the_sweep_and_resume_finishes_it(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    args = [str(NNRUN), "sweep", "conf=lenet5", "seed=0,1", *TINY, "trainer.epochs=30", "trainer.log_every=1"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=proc_env(NNRUN_OUTPUTS=str(outputs)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(outputs.glob("lenet5/sweeps/*/000/metrics.jsonl")):
        time.sleep(0.5)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, out + err
    [sweep_dir] = sweep_dirs(outputs)
    spec = read_json(sweep_dir / "sweep.json")
    assert spec["status"] == "interrupted"
    assert [t["status"] for t in spec["trials"]] == ["interrupted", "pending"]
    assert read_json(sweep_dir / "000" / "summary.json")["status"] == "interrupted"

    done = subprocess.run([str(NNRUN), "sweep", "--resume", str(sweep_dir)], cwd=tmp_path, env=proc_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[000] resumed" in done.stdout and "[001] started" in done.stdout
    assert read_json(sweep_dir / "000" / "summary.json")["resumed"] is True
