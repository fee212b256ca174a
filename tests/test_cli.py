"""The `nnrun` command line as a user drives it: train, eval, show, list, and the errors.

Most commands run in-process (CliRunner on `cli.main.app`, or `cli.main.run` for the
one-line error formatting); a few run the real console script where the process itself
matters (exit codes, stderr, start-up time, two processes at once).
"""
from __future__ import annotations

import gzip
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import (
    NNRUN,
    TINY,
    TINY_STEPS,
    Outcome,
    assert_one_line_error,
    nnrun_proc,
    proc_env,
    read_json,
    read_metrics,
    tree_files,
)

STEPS_PER_EPOCH = TINY_STEPS // 2


def table_rows(text: str) -> list[list[str]]:
    """The cells of each body row of a rich table (box-drawn with '│')."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.count("│") >= 2]


# ---------------------------------------------------------------------------- train


def test_train_lenet5_writes_a_complete_run_directory(trained_run: dict) -> None:
    run_dir: Path = trained_run["dir"]
    outcome: Outcome = trained_run["outcome"]
    assert outcome.code == 0, outcome.out
    assert "lenet5: completed" in outcome.out

    # hydra.run.dir= is honoured: the run is exactly there, nothing under NNRUN_OUTPUTS
    assert run_dir.is_dir()
    assert not (trained_run["base"] / "outputs").exists()
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "run.log"):
        assert (run_dir / name).is_file(), name
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert (run_dir / ".hydra" / name).is_file(), name
    assert "trainer.epochs=2" in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == "lenet5"
    assert config["data"]["train_subset"] == 2000 and config["trainer"]["epochs"] == 2
    assert "hydra" not in config and "resume" not in config

    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed"
    assert summary["experiment"] == "lenet5"
    assert Path(summary["run_dir"]) == run_dir.resolve()
    assert summary["wall_time_s"] > 0
    assert summary["epochs_done"] == 2
    assert summary["steps_done"] == TINY_STEPS
    assert summary["best"]["step"] in (STEPS_PER_EPOCH, TINY_STEPS)
    assert 0.0 <= summary["best"]["accuracy"] <= 1.0
    assert set(summary["final"]["val"]) >= {"loss", "accuracy"}
    assert 0.2 < summary["test"]["accuracy"] <= 1.0  # 30 steps of Adam: well above chance (0.1)
    assert math.isfinite(summary["test"]["loss"]) and summary["test"]["loss"] > 0

    records = read_metrics(run_dir)
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in train] == list(range(5, TINY_STEPS + 1, 5))
    assert [r["step"] for r in val] == [STEPS_PER_EPOCH, TINY_STEPS]
    assert all({"loss", "accuracy", "lr", "epoch"} <= set(r) for r in train)
    assert val[-1]["accuracy"] == pytest.approx(summary["final"]["val"]["accuracy"])

    last = run_dir / "checkpoints" / "last"
    best = run_dir / "checkpoints" / "best"
    assert str(TINY_STEPS) in {p.name for p in last.iterdir()}
    assert str(summary["best"]["step"]) in {p.name for p in best.iterdir()}

    log = (run_dir / "run.log").read_text()
    assert "run lenet5" in log and "run completed" in log

    for png in ("loss.png", "accuracy.png"):  # trainer.plots=true in this run
        data = (run_dir / "plots" / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000, png


def test_train_print_config_shows_resolved_yaml_and_creates_nothing(nnrun_cli, outputs: Path, tmp_path: Path) -> None:
    result = nnrun_cli("train", "conf=lenet5", "--cfg", "trainer.epochs=3", "data.train_subset=100", "optim.lr=0.01")
    assert result.code == 0
    assert "${" not in result.out
    cfg = yaml.safe_load(result.out)
    assert set(cfg) >= {"seed", "model", "data", "optim", "schedule", "trainer"}
    assert "hydra" not in cfg
    assert cfg["trainer"]["epochs"] == 3
    assert cfg["data"]["train_subset"] == 100  # a schema key the YAML leaves out
    assert cfg["optim"]["lr"] == 0.01
    assert not outputs.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two real trainings side by side: ~12 s
def test_two_runs_started_together_get_different_directories(tmp_path: Path) -> None:
    """Two `nnrun train` processes started in the same second (default run dirs)."""
    outputs = tmp_path / "outputs"
    args = [str(NNRUN), "train", "conf=hopfield_letters", "trainer.plots=false", "trainer.progress=false"]
    env = proc_env(NNRUN_OUTPUTS=str(outputs))
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    runs = sorted((outputs / "hopfield_letters").iterdir())
    assert len(runs) == 2, runs
    for run in runs:
        summary = read_json(run / "summary.json")
        assert summary["status"] == "completed"
        assert summary["test"]["half.T.exact_recall"] == 1.0  # the 'T' comes back from a half-noise copy
        assert (run / "checkpoints" / "best").is_dir()


# ---------------------------------------------------------------------------- eval


def test_eval_last_checkpoint_reproduces_the_final_test_metrics(nnrun_cli, trained_run: dict) -> None:
    run_dir = trained_run["dir"]
    summary = read_json(run_dir / "summary.json")
    result = nnrun_cli("eval", str(run_dir), "--last")
    assert result.code == 0, result.out
    assert "eval-last-test.json" in result.out
    metrics = read_json(run_dir / "eval-last-test.json")
    assert read_json(run_dir / "eval.json") == metrics  # eval.json: the latest eval
    assert metrics["split"] == "test" and metrics["checkpoint"] == "last" and metrics["step"] == TINY_STEPS
    assert metrics["accuracy"] == pytest.approx(summary["test_last"]["accuracy"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(summary["test_last"]["loss"], rel=1e-5)


def test_eval_best_checkpoint_by_default(nnrun_cli, trained_run: dict) -> None:
    run_dir = trained_run["dir"]
    summary = read_json(run_dir / "summary.json")
    result = nnrun_cli("eval", str(run_dir))
    assert result.code == 0, result.out
    metrics = read_json(run_dir / "eval-best-test.json")
    assert metrics["checkpoint"] == "best" and metrics["step"] == summary["best"]["step"]
    assert 0.2 < metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])
    # the summary's test metrics are the best checkpoint's, as eval reports them (issue 13)
    assert summary["test_from"] == {"checkpoint": "best", "step": summary["best"]["step"]}
    assert metrics["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-5)


def test_eval_validation_split(nnrun_cli, trained_run: dict) -> None:
    run_dir = trained_run["dir"]
    summary = read_json(run_dir / "summary.json")
    result = nnrun_cli("eval", str(run_dir), "--split", "val", "--last")
    assert result.code == 0, result.out
    metrics = read_json(run_dir / "eval-last-val.json")
    assert metrics["split"] == "val"
    assert metrics["accuracy"] == pytest.approx(summary["final"]["val"]["accuracy"], abs=1e-6)


def test_eval_unknown_split_is_an_error(nnrun_main, trained_run: dict) -> None:
    assert_one_line_error(nnrun_main("eval", str(trained_run["dir"]), "--split", "bogus"), "bogus", "train, val or test")


def test_eval_run_without_checkpoints_is_an_error(nnrun_main, trained_run: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "no-checkpoints"
    shutil.copytree(trained_run["dir"], run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    assert_one_line_error(nnrun_main("eval", str(run_dir)), "has no checkpoints/")


def test_eval_checkpoint_that_does_not_fit_the_model_is_an_error(nnrun_main, trained_run: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "edited"
    shutil.copytree(trained_run["dir"], run_dir)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("pad_to: 32", "pad_to: 36"))  # F6 now sees 480 inputs, not 120
    assert_one_line_error(nnrun_main("eval", str(run_dir), "--last"), "does not fit the model", "(120, 84)")


def test_eval_directory_that_is_not_a_run_is_an_error(nnrun_main, tmp_path: Path) -> None:
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert_one_line_error(nnrun_main("eval", str(empty)), "not an nnrun run directory")
    assert_one_line_error(nnrun_main("eval", str(tmp_path / "missing")), "does not exist")


# ---------------------------------------------------------------------------- show, list


def test_show_lenet5_prints_the_1998_table(nnrun_cli) -> None:
    result = nnrun_cli("show", "conf=lenet5")
    assert result.code == 0, result.out
    rows = table_rows(result.out)
    assert [r[0] for r in rows] == ["C1", "S2", "C3", "S4", "C5", "F6", "Out", "Total"]
    header = next(line for line in result.out.splitlines() if "Layer" in line)
    params_col = [c.strip() for c in header.split("┃")[1:-1]].index("Params")
    assert rows[-1][params_col] == "61,706"
    assert [r[params_col] for r in rows[:-1]] == ["156", "0", "2,416", "0", "48,120", "10,164", "850"]


def test_show_lstm_mnist(nnrun_cli) -> None:
    result = nnrun_cli("show", "conf=lstm_mnist")
    assert result.code == 0, result.out
    rows = table_rows(result.out)
    assert rows[0][:2] == ["R1", "LSTM"] and rows[-1][0] == "Total"
    assert "81,674" in rows[-1]  # 4 * (28 + 128 + 1) * 128 + 129 * 10


def test_show_hopfield_letters(nnrun_cli) -> None:
    result = nnrun_cli("show", "conf=hopfield_letters")
    assert result.code == 0, result.out
    rows = table_rows(result.out)
    assert rows[0][:3] == ["units", "Binary threshold", "20x20"] and rows[-1][0] == "Total"


def test_list_names_experiments_models_datasets_optimizers(nnrun_cli) -> None:
    result = nnrun_cli("list")
    assert result.code == 0, result.out
    rows = table_rows(result.out)
    kinds: dict[str, set[str]] = {}
    for row in rows:
        kinds.setdefault(row[0], set()).add(row[1])
    assert kinds["experiment"] >= {"lenet5", "lstm_mnist", "hopfield_letters"}
    assert kinds["model"] >= {"lenet5", "rnn", "hopfield"}
    assert kinds["dataset"] >= {"mnist", "mnist_seq", "fashion_mnist", "letters"}
    assert kinds["optimizer"] >= {"sgd", "momentum", "adam", "adamw"}
    assert kinds["schedule"] >= {"constant", "cosine", "warmup_cosine", "step"}
    assert kinds["trainer"] >= {"gradient", "hebbian"}
    assert kinds["optimizer"] >= {"sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"}
    assert kinds["objective"] >= {"classification", "regression", "sequence", "language_model", "reconstruction"}
    assert kinds["schedule"] >= {"constant", "cosine", "warmup_cosine", "step"}
    lenet = next(r for r in rows if r[:2] == ["model", "lenet5"])
    assert lenet[2].startswith("[gradient]")  # the trainer, not swallowed as rich markup


# ---------------------------------------------------------------------------- errors


CONFIG_ERRORS = {
    "unknown_experiment": (["train", "conf=lenet6"], ["unknown experiment 'lenet6'", "lenet5, ", "lstm_mnist"]),
    "no_experiment": (["train"], ["no experiment given", "lenet5"]),
    "unknown_key": (["train", "conf=lenet5", "trainer.epochz=3"], ["'trainer.epochz'", "epochs"]),
    "unknown_top_level_key": (["train", "conf=lenet5", "epochs=3"], ["'epochs'"]),
    "bad_value_type": (["train", "conf=lenet5", "trainer.epochs=many"], ["'trainer.epochs'", "many"]),
    "bad_seed": (["train", "conf=lenet5", "seed=abc"], ["'seed'"]),
    "unknown_group_choice": (["train", "conf=lenet5", "optim=adamm"], ["optim/adamm", "adagrad, adam, adamw, momentum, rmsprop, sgd"]),
    "bad_optimizer_name": (["train", "conf=lenet5", "optim.name=adamm"], ["'optim.name'", "adamm", "adagrad, adam"]),
    "negative_lr": (["train", "conf=lenet5", "optim.lr=-1"], ["'optim.lr'"]),
    "model_of_another_loop": (["train", "conf=lenet5", "model=hopfield"], ["trainer=hebbian"]),
    "unknown_rnn_cell": (["train", "conf=lstm_mnist", "model.cell=bogus"], ["'model.cell'", "bogus", "simple, lstm, gru"]),
    "unknown_option": (["train", "conf=lenet5", "--epochs=3"], ["unknown option '--epochs=3'"]),
    "show_unknown_key": (["show", "conf=lenet5", "model.depth=3"], ["'model.depth'"]),
}


@pytest.mark.parametrize("args, fragments", CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys())
def test_config_error_is_one_line_and_creates_no_run(nnrun_main, outputs: Path, args, fragments) -> None:
    assert_one_line_error(nnrun_main(*args), *fragments)
    assert not outputs.exists()


def test_missing_data_file_names_the_file(nnrun_main, tmp_path: Path) -> None:
    empty = tmp_path / "empty-data"
    empty.mkdir()
    run_dir = tmp_path / "run"
    line = assert_one_line_error(
        nnrun_main("train", "conf=lenet5", *TINY, f"data.root={empty}", f"hydra.run.dir={run_dir}"),
        str(empty / "train-images-idx3-ubyte.gz"), "does not exist",
    )
    assert f"data.root={empty}" in line  # says which setting pointed there
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "failed" and "train-images-idx3-ubyte.gz" in summary["error"]
    assert "traceback" not in summary  # a user error, not a crash


def test_corrupt_data_file_names_the_file(nnrun_main, tmp_path: Path) -> None:
    from experiments.data.mnist import MNIST_FILES, PACKAGED_MNIST_DIR

    copy = tmp_path / "mnist"
    copy.mkdir()
    for name in MNIST_FILES:
        shutil.copyfile(PACKAGED_MNIST_DIR / name, copy / name)
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + b"\0" * 20))
    assert_one_line_error(
        nnrun_main("train", "conf=lenet5", *TINY, f"data.root={copy}", f"hydra.run.dir={tmp_path / 'run'}"),
        str(copy / "t10k-labels-idx1-ubyte.gz"), "corrupt",
    )


def test_non_finite_loss_fails_the_run_and_keeps_the_last_good_checkpoint(nnrun_main, tmp_path: Path) -> None:
    """Epoch 1 trains normally (SGD, lr 0.1); the step schedule then multiplies the lr by
    1e38 (lr 1e37), so the parameters overflow and the loss turns NaN a few steps into
    epoch 2, deterministically."""
    run_dir = tmp_path / "run"
    outcome = nnrun_main("train", "conf=lenet5", *TINY, "optim=sgd", "optim.lr=0.1", "schedule=step",
                         "schedule.step_epochs=[1]", "schedule.decay=1e38", f"hydra.run.dir={run_dir}")
    line = assert_one_line_error(outcome, "non-finite", "at step")
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "failed"
    assert "non-finite" in summary["error"] and "at step" in summary["error"]
    bad_step = int(summary["error"].split("at step ")[1].split(";")[0])
    assert STEPS_PER_EPOCH <= bad_step < TINY_STEPS
    assert f"at step {bad_step}" in line
    assert "test" not in summary
    # the checkpoint of the healthy first epoch is still there
    assert [p.name for p in (run_dir / "checkpoints" / "last").iterdir() if p.name.isdigit()] == [str(STEPS_PER_EPOCH)]
    assert (run_dir / "checkpoints" / "best" / str(STEPS_PER_EPOCH)).is_dir()
    val = [r for r in read_metrics(run_dir) if r["split"] == "val"]
    assert [r["step"] for r in val] == [STEPS_PER_EPOCH] and val[0]["accuracy"] > 0.3  # a healthy epoch 1


def test_existing_run_directory_is_refused_and_left_untouched(nnrun_main, tmp_path: Path) -> None:
    run_dir = tmp_path / "taken"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "summary.json").write_text('{"status": "completed"}\n')
    (run_dir / "notes.txt").write_text("precious\n")
    before = tree_files(run_dir)
    assert_one_line_error(nnrun_main("train", "conf=lenet5", *TINY, f"hydra.run.dir={run_dir}"),
                          "already exists", f"resume={run_dir}")
    assert tree_files(run_dir) == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "notes.txt", "summary.json"]


def test_debug_flag_before_the_command_shows_the_traceback(nnrun_main) -> None:
    outcome = nnrun_main("--debug", "train", "conf=lenet5", "trainer.epochz=3")
    assert outcome.code == 2
    assert "Traceback" in outcome.err
    assert outcome.err.strip().splitlines()[-1].startswith("nnrun: error: unknown config key 'trainer.epochz'")


# ---------------------------------------------------------------------------- the console script


def test_console_script_bad_input_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    outcome = nnrun_proc("train", "conf=lenet5", "trainer.epochz=3", cwd=tmp_path, NNRUN_OUTPUTS=str(tmp_path / "o"))
    assert outcome.code == 2
    assert_one_line_error(outcome, "unknown config key 'trainer.epochz'")
    assert outcome.out == ""
    assert list(tmp_path.iterdir()) == []


def test_console_script_debug_after_the_command_shows_the_traceback(tmp_path: Path) -> None:
    outcome = nnrun_proc("train", "conf=lenet5", "trainer.epochz=3", "--debug", cwd=tmp_path,
                         NNRUN_OUTPUTS=str(tmp_path / "o"))
    assert outcome.code == 2
    assert "Traceback (most recent call last)" in outcome.err
    assert outcome.err.strip().splitlines()[-1].startswith("nnrun: error: unknown config key 'trainer.epochz'")


def test_help_is_fast_and_does_not_import_jax(tmp_path: Path) -> None:
    nnrun_proc("--help", cwd=tmp_path)  # warm the OS file cache: the timing below is of nnrun itself
    start = time.perf_counter()
    outcome = nnrun_proc("--help", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert outcome.code == 0
    for command in ("train", "eval", "show", "list", "--debug"):
        assert command in outcome.out
    assert elapsed < 2.0, f"nnrun --help took {elapsed:.2f} s"
    check = subprocess.run(
        [sys.executable, "-c", "import cli.main, sys; assert 'jax' not in sys.modules, 'jax imported'; "
                               "assert 'hydra' not in sys.modules, 'hydra imported'"],
        cwd=tmp_path, env=proc_env(), capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_subcommand_help_is_fast(tmp_path: Path) -> None:
    for command in ("train", "eval", "show", "list"):
        start = time.perf_counter()
        outcome = nnrun_proc(command, "--help", cwd=tmp_path)
        assert outcome.code == 0, outcome.err
        assert time.perf_counter() - start < 2.0, command
