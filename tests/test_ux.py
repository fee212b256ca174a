"""What a user reads (issue 13): tables and progress that fit 80 columns, summaries that
agree with eval, one-line errors that name the right thing, run directories that tell runs
apart, run.log, sweep plots and tables, launcher checks before anything is created."""
from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from conftest import TINY, assert_one_line_error, nnrun_proc, read_json, read_metrics

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def narrow_console(monkeypatch: pytest.MonkeyPatch, width: int = 80):
    from rich.console import Console

    import cli.commands

    console = Console(width=width, no_color=True, file=io.StringIO())
    monkeypatch.setattr(cli.commands, "console", console)
    return console


# ---------------------------------------------------------------------------- a run at 80 columns


def test_a_run_at_80_columns_piped_shows_the_whole_run_dir_and_no_cut_value(tmp_path: Path) -> None:
    """The issue's check: `COLUMNS=80 nnrun train conf=lenet5 ... | cat` (stdout is a pipe)."""
    run_dir = tmp_path / "a-rather-long-folder-name-so-that-the-path-is-longer-than-eighty-columns" / "run"
    # chunks of 4 steps in 15-step epochs: each epoch ends with a short 3-step chunk
    args = [*(a for a in TINY if a not in ("trainer.progress=false", "trainer.log_every=5")),
            "trainer.log_every=4", "trainer.progress=true", f"hydra.run.dir={run_dir}"]
    outcome = nnrun_proc("train", "conf=lenet5", *args, cwd=tmp_path, COLUMNS="80")
    assert outcome.code == 0, outcome.err
    lines = outcome.out.splitlines()
    assert len(str(run_dir)) > 80
    assert f"run dir: {run_dir}" in lines  # whole, on its own line
    assert "…" not in outcome.out and "..." not in outcome.out, outcome.out
    assert all(len(line) <= 80 for line in lines if not line.startswith("run dir:")), outcome.out
    # progress, not a terminal: one plain line per epoch, nothing clipped
    epochs = [(line, lines[i + 1]) for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(epochs) == 2 and "step 15/30" in epochs[0][0], outcome.out
    assert all("val accuracy" in a + b and "examples/s" in a + b for a, b in epochs), outcome.out

    summary = read_json(run_dir / "summary.json")
    # test metrics of the best checkpoint, said so; the last parameters' kept apart
    assert summary["test_from"] == {"checkpoint": "best", "step": summary["best"]["step"]}
    assert set(summary["test_last"]) == set(summary["test"])
    assert f"test (best ckpt, step {summary['best']['step']}) accuracy" in outcome.out
    # the steady-state throughput: full 4-step chunks after the first, not the short tail chunks
    train = [r for r in read_metrics(run_dir) if r["split"] == "train" and r["examples_per_s"]]
    full = [r["examples_per_s"] for r in train if r["step"] % 15 != 0]  # 4, 8, 12 steps into an epoch
    short = [r["examples_per_s"] for r in train if r["step"] % 15 == 0]
    assert full and short
    steady = len(full) / sum(1 / ips for ips in full)  # equal chunks: total examples / total time
    assert summary["examples_per_s"] == pytest.approx(steady, rel=1e-6)
    assert f"{summary['examples_per_s']:,.0f} examples/s" in outcome.out

    # run.log: the run's story, not two lines
    log = (run_dir / "run.log").read_text()
    assert "training: 2 epochs of 15 steps" in log
    assert len(re.findall(r"epoch \d/2 +step", log)) == 2 and "run completed" in log


def test_show_drops_low_value_columns_at_80_columns_and_cuts_no_value(nnrun_cli, monkeypatch) -> None:
    from cli import commands

    console = narrow_console(monkeypatch, 80)
    assert commands.show("lenet5", []) == 0
    out = console.file.getvalue()
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines())
    assert "845,862" in out and "239,904" in out and "61,706" in out  # FLOPs and params whole
    assert "left out to fit 80 columns: Maps/Units" in out
    wide = narrow_console(monkeypatch, 200)
    assert commands.show("lenet5", []) == 0
    assert "Maps/Units" in wide.file.getvalue() and "left out" not in wide.file.getvalue()


def test_list_folds_descriptions_instead_of_cutting_them(monkeypatch) -> None:
    from cli import commands
    from experiments.models import MODELS

    console = narrow_console(monkeypatch, 80)
    assert commands.list_all() == 0
    out = console.file.getvalue()
    assert "…" not in out
    text = re.sub(r"[\s│┃|]+", "", out)  # the table's cells, folded text joined again
    for name, entry in MODELS.items():
        assert re.sub(r"\s+", "", entry.description) in text, name
    # an experiment's header: its first sentence whole, though it runs over two comment lines
    assert re.sub(r"\s+", "", "LeNet5 (LeCun et al. 1998, 61,706 parameters) on MNIST: 55k train / 5k "
                  "validation, Adam with warmup + cosine decay, batch 128.") in text


def test_progress_bar_in_an_80_column_terminal_cuts_nothing() -> None:
    from rich.console import Console

    from experiments.training.progress import TrainProgress

    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    with TrainProgress(12, 429, ["accuracy", "loss"], console=console) as progress:
        progress.update(11, 429, {"loss": 0.0271234, "accuracy": 0.99163}, 10768.4)
        progress.end_epoch(12, {"accuracy": 0.99166, "loss": 0.03})
    out = ANSI.sub("", console.file.getvalue())
    assert "…" not in out
    assert "5148/5148" in out and "accuracy 0.9916" in out and "10.8k/s" in out and "| val 0.9917" in out


# ---------------------------------------------------------------------------- words that are right


def test_help_suggests_only_choices_that_exist(nnrun_cli) -> None:
    from experiments.models import MODELS
    from experiments.optim import OPTIMIZERS

    groups = {"model": set(MODELS.names()), "optim": set(OPTIMIZERS.names())}
    for command in ("train", "sweep"):
        out = nnrun_cli(command, "--help").out
        suggested = re.findall(r"\b(model|optim)=(\w+(?:,\w+)*)", out)
        assert suggested, out
        for group, values in suggested:
            assert set(values.split(",")) <= groups[group], (command, group, values)


def test_a_typo_lists_the_chosen_entrys_keys(nnrun_main) -> None:
    line = assert_one_line_error(nnrun_main("train", "conf=lenet5", "model.hiden=3"), "model.hiden",
                                 "allowed keys for model 'lenet5': activation, layout, name, pad_to")
    assert "cell" not in line and "noise_levels" not in line  # other models' keys
    assert_one_line_error(nnrun_main("train", "conf=lenet5", "model=mlp", "model.hiden=3"),
                          "did you mean 'model.hidden'?", "allowed keys for model 'mlp': activation, dropout, hidden")


def test_data_of_the_wrong_shape_names_the_expected_and_given_shapes(nnrun_main) -> None:
    assert_one_line_error(nnrun_main("train", "conf=lenet5", "data=synthetic_series", "trainer.progress=false"),
                          "model 'lenet5' cannot take the inputs of data 'synthetic_series'",
                          "shape (N, 40, 1)", "expects inputs of shape (N, H, W, C)")


def test_eval_of_the_validation_split_of_a_hopfield_run_is_refused(nnrun_cli, nnrun_main, tmp_path: Path) -> None:
    run_dir = tmp_path / "hop"
    assert nnrun_cli("train", "conf=hopfield_letters", "trainer.plots=false", f"hydra.run.dir={run_dir}").code == 0
    assert_one_line_error(nnrun_main("eval", str(run_dir), "--split", "val"), "only the stored patterns",
                          "drop --split val")
    assert not list(run_dir.glob("eval*.json"))


# ---------------------------------------------------------------------------- run directories


def test_run_directories_name_the_overridden_group_choices(outputs: Path) -> None:
    from experiments import hydra_bridge as hb

    plain = hb.resolved_run_dir(hb.compose("lenet5", ["optim.lr=0.01"])[0])
    other = hb.resolved_run_dir(hb.compose("lenet5", ["model=mlp", "data=fashion_mnist", "optim.lr=0.01"])[0])
    assert plain.parent == other.parent == (outputs / "lenet5").resolve()
    stamp = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-"  # the two composes may straddle a second
    run_id = hb._RUN_ID
    assert re.fullmatch(stamp + run_id, plain.name), plain.name
    assert re.fullmatch(stamp + run_id + "-model=mlp,data=fashion_mnist", other.name), other.name
    assert hb.choices_suffix(["+optim=sgd", "hydra.run.dir=x", "model=a/b"]) == "-optim=sgd,model=a_b"


# ---------------------------------------------------------------------------- sweeps


def _state(tmp_path: Path, overrides: list[str], metrics: dict):
    from experiments.sweep import spec as spec_mod
    from experiments.sweep.results import SweepState

    spec = spec_mod.build("lenet5", overrides)
    spec.metric, spec.direction = "best.accuracy", "max"  # as resolve_metrics sets them for lenet5
    state = SweepState(tmp_path / "sweep-x", spec, [], {})
    for i, (params, metric) in enumerate(metrics.items()):
        state.records.append({"id": f"{i:03d}", "params": dict(params), "status": "completed", "metric": metric,
                              "test_metric": None, "wall_time_s": 1.0, "run_dir": "", "error": None})
    return state


def test_sweep_plot_is_mean_and_range_over_seeds_on_the_declared_log_axis(tmp_path: Path) -> None:
    from experiments.sweep.results import metric_plots, plot_metric

    metrics = {(("optim.lr", 0.001), ("seed", 0)): 0.90, (("optim.lr", 0.001), ("seed", 1)): 0.94,
               (("optim.lr", 0.01), ("seed", 0)): 0.97, (("optim.lr", 0.01), ("seed", 1)): 0.95,
               (("optim.lr", 0.02), ("seed", 0)): 0.93, (("optim.lr", 0.02), ("seed", 1)): 0.93}
    state = _state(tmp_path, ["sweep.search=random", "sweep.budget=6", "optim.lr=tag(log,interval(0.0001,0.1))",
                              "seed=0,1"], metrics)
    [plot] = metric_plots(state)  # nothing against seed
    assert plot["param"] == "optim.lr" and plot["log"] is True  # declared log, though the values span 20x
    assert plot["spread"] == "mean and min-max over 2 seeds"
    [(name, rows)] = plot["series"].items()
    assert [r[0] for r in rows] == [0.001, 0.01, 0.02]
    assert [r[1:] for r in rows] == [pytest.approx((0.92, 0.90, 0.94, 2)), pytest.approx((0.96, 0.95, 0.97, 2)),
                                     pytest.approx((0.93, 0.93, 0.93, 2))]
    paths = plot_metric(state)
    assert [p.name for p in paths] == ["metric_vs_optim.lr.png"]
    assert not (state.dir / "plots" / "metric_vs_seed.png").exists()
    linear = _state(tmp_path / "lin", ["optim.lr=0.001,0.01,0.02"], {(("optim.lr", x),): 0.9 for x in (0.001, 0.01)})
    assert metric_plots(linear)[0]["log"] is False  # a plain list: declared nothing, spans 10x


def test_every_search_writes_aggregate_csv_and_rounds_floats_in_tables(tmp_path: Path) -> None:
    from rich.console import Console

    from experiments.sweep.results import aggregate, results_table, write_aggregate

    lr = 0.0012345678901234
    state = _state(tmp_path, ["sweep.search=random", "sweep.budget=2", "optim.lr=interval(0.0001,0.1)"],
                   {(("optim.lr", lr),): 0.912345678, (("optim.lr", 0.01),): 0.95})
    rows = aggregate(state)  # no seed swept: one row per configuration
    assert [(r["optim.lr"], r["n"], r["mean"]) for r in rows] == [(0.01, 1, 0.95), (lr, 1, 0.912345678)]
    state.dir.mkdir(parents=True)
    assert write_aggregate(state, rows) == state.dir / "aggregate.csv"
    console = Console(width=80, file=io.StringIO(), no_color=True)
    console.print(results_table(state))
    out = console.file.getvalue()
    assert "0.001235" in out and "0.9123" in out and "0.0012345678" not in out
    assert "…" not in out and "error" not in out  # no empty error column


def test_a_launcher_that_cannot_start_fails_before_anything_is_created(nnrun_main, outputs: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the cluster extra
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_ray_launcher._core", None)
    for extra in ([], ["--dry-run"]):
        outcome = nnrun_main("sweep", "conf=lenet5", "seed=0,1", "hydra/launcher=ray", *extra)
        assert_one_line_error(outcome, "Hydra's 'ray' launcher cannot start here", "pip install 'nnrun[cluster]'")
        assert not outputs.exists()


def test_learning_curve_y_range_leaves_out_the_first_chunks() -> None:
    from experiments.plots import y_limits

    points = [(0.05, 0.1), (0.1, 0.5), (1.0, 0.90), (2.0, 0.95), (3.0, 0.97)]
    lo, hi = y_limits(points)
    assert 0.85 < lo < 0.90 and 0.97 < hi < 1.0
    assert y_limits(points[:2]) is None
