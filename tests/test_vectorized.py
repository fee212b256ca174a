"""Vectorised sweep trials (experiments/sweep/vectorized.py): a group trained as one
vmapped program gives each trial what the same trial run alone gives, in its own run
directory; planning groups what vmap can batch and falls back for the rest."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from tests.conftest import read_json, read_metrics, restore_raw

SMALL = [
    "data.train_subset=1000",
    "data.val_size=200",
    "data.test_subset=500",
    "trainer.epochs=2",
    "trainer.batch_size=100",
    "trainer.log_every=5",
    "trainer.progress=false",
    "trainer.plots=false",
]
STEPS = 16  # 2 epochs x (800 // 100)
# 2 learning rates x 2 seeds; dropout and weight decay differ too, so that the model's
# traced field and a traced optimizer value are checked along with the lr and the seed
GRID = [
    ["optim.lr=0.001", "seed=0", "model.dropout=0.1", "optim.weight_decay=0.0001"],
    ["optim.lr=0.001", "seed=1", "model.dropout=0.3", "optim.weight_decay=0.001"],
    ["optim.lr=0.003", "seed=0", "model.dropout=0.3", "optim.weight_decay=0.0001"],
    ["optim.lr=0.003", "seed=1", "model.dropout=0.1", "optim.weight_decay=0.001"],
]
# epoch 1 as usual, then the step schedule multiplies the lr by 1e35: NaN early in epoch 2
BLOW_UP = ["optim.lr=0.001", "seed=2", "model.dropout=0.1", "optim.weight_decay=0.001", "schedule=step",
           "schedule.step_epochs=[1]", "schedule.decay=1e35"]


def trial(i: int, overrides: list[str]):
    from experiments.sweep.vectorized import Trial

    return Trial(f"{i:03d}", [*SMALL, *overrides], {})


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The grid plus a blow-up trial, trained once as a vectorised group and once one by
    one in-process (compose + run_experiment, as `nnrun train` would)."""
    from experiments.hydra_bridge import compose, task_config
    from experiments.errors import UserError
    from experiments.runner import run_experiment
    from experiments.sweep.vectorized import plan_vectorized, run_vectorized_group

    base = tmp_path_factory.mktemp("vectorized")
    trials = [trial(i, o) for i, o in enumerate([*GRID, BLOW_UP])]
    groups, fallback, reason = plan_vectorized("mlp_mnist", trials, force=False)
    assert [[t.id for t in g] for g in groups] == [[t.id for t in trials]] and not fallback and reason == ""
    run_vectorized_group("mlp_mnist", groups[0], base / "vec")
    for t in trials:
        try:
            run_experiment(task_config(compose("mlp_mnist", t.overrides)[0]), base / "seq" / t.id, "mlp_mnist")
        except UserError:
            pass  # the blow-up trial; its summary says so
    return {"vec": base / "vec", "seq": base / "seq", "ids": [t.id for t in trials]}


def test_vectorised_trials_match_the_same_trials_run_one_by_one(both: dict) -> None:
    for tid in both["ids"][: len(GRID)]:
        vec, seq = both["vec"] / tid, both["seq"] / tid
        for which in ("last", "best"):
            a, step_a = restore_raw(vec / "checkpoints", which)
            b, step_b = restore_raw(seq / "checkpoints", which)
            assert step_a == step_b
            assert jax.tree.structure(a) == jax.tree.structure(b)
            # not bit-equal: a vmapped matmul sums in another order than a plain one, and Adam's
            # division by sqrt(nu) magnifies last-bit differences in weights with tiny gradients
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=1e-4, atol=3e-5)
        sv, ss = read_json(vec / "summary.json"), read_json(seq / "summary.json")
        assert sv["status"] == ss["status"] == "completed"
        for key in ("seed", "epochs_done", "steps_done", "steps_per_epoch", "backend", "scan"):
            assert sv[key] == ss[key], key
        assert sv["steps_done"] == STEPS
        for mine, theirs in [(sv["test"], ss["test"]), (sv["best"], ss["best"]),
                             (sv["final"]["val"], ss["final"]["val"])]:
            assert mine.keys() == theirs.keys()
            for k in mine:
                assert mine[k] == pytest.approx(theirs[k], rel=1e-4, abs=1e-5), (tid, k)
        mv, ms = read_metrics(vec), read_metrics(seq)
        assert [(r["step"], r["split"]) for r in mv] == [(r["step"], r["split"]) for r in ms]
        for rv, rs in zip(mv, ms):
            assert rv.keys() == rs.keys()
            for k in ("loss", "accuracy", "lr"):
                if k in rs:
                    assert rv[k] == pytest.approx(rs[k], rel=1e-4, abs=1e-5), (tid, rs["step"], k)
        assert (vec / "config.yaml").read_text() == (seq / "config.yaml").read_text()
        assert sv["vectorized"] is True and sv["group_size"] == len(GRID) + 1
        assert set(ss) - {"traceback"} <= set(sv)


def test_a_trial_whose_loss_blows_up_fails_alone_like_its_own_run(both: dict) -> None:
    vec, seq = both["vec"] / both["ids"][-1], both["seq"] / both["ids"][-1]
    sv, ss = read_json(vec / "summary.json"), read_json(seq / "summary.json")
    assert sv["status"] == ss["status"] == "failed"
    assert sv["error"] == ss["error"] and "non-finite" in sv["error"]
    assert [(r["step"], r["split"]) for r in read_metrics(vec)] == [(r["step"], r["split"]) for r in read_metrics(seq)]
    for which in ("last", "best"):  # the healthy first epoch's checkpoints are kept
        assert restore_raw(vec / "checkpoints", which)[1] == restore_raw(seq / "checkpoints", which)[1] == STEPS // 2
    healthy = [read_json(both["vec"] / t / "summary.json")["status"] for t in both["ids"][: len(GRID)]]
    assert healthy == ["completed"] * len(GRID)


def test_eval_and_resume_accept_a_vectorised_trial(both: dict, outputs: Path, tmp_path: Path) -> None:
    # cli.commands directly, not CliRunner: absl's log handler, created by the fixture's runs
    # outside CliRunner, closes pytest's captured stderr when Hydra reconfigures logging there
    from cli import commands

    run_dir = tmp_path / "trial"
    shutil.copytree(both["vec"] / both["ids"][0], run_dir)
    assert commands.evaluate(run_dir, "last", "test") == 0
    assert read_json(run_dir / "eval.json")["accuracy"] == pytest.approx(
        read_json(run_dir / "summary.json")["test_last"]["accuracy"])
    # a finished trial resumed with one more epoch continues from its last checkpoint
    assert commands.train(None, ["trainer.epochs=3"], resume=str(run_dir)) == 0
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["resumed"] is True
    assert summary["steps_done"] == STEPS // 2 * 3


def _plan(trials, force: bool = False):
    from experiments.sweep.vectorized import plan_vectorized

    groups, fallback, reason = plan_vectorized("mlp_mnist", trials, force)
    return [[t.id for t in g] for g in groups], [t.id for t in fallback], reason


def test_trials_that_change_shapes_or_the_loop_run_separately() -> None:
    trials = [
        trial(0, ["optim.lr=0.001", "seed=0"]),
        trial(1, ["optim.lr=0.003", "seed=1", "schedule=warmup_cosine", "optim.b1=0.8"]),  # vmappable
        trial(2, ["optim.lr=0.001", "trainer.batch_size=50"]),  # another batch shape
        trial(3, ["model.hidden=[128]", "seed=3"]),  # other parameter shapes: a group of their own
        trial(4, ["model.hidden=[128]", "seed=4"]),
        trial(5, ["optim=sgd"]),  # another optimizer (state structure)
        trial(6, ["model.dropout=0.0"]),  # dropout off: a model without the dropout layer
        trial(7, ["optim.clip_norm=1.0"]),  # a chain with clipping
    ]
    groups, fallback, reason = _plan(trials)
    assert groups == [["000", "001"], ["003", "004"]]
    assert fallback == ["002", "005", "006", "007"]
    assert reason.startswith("4 trial(s) run separately: no other trial shares their ")
    for key in ("trainer.batch_size", "optim.name", "model.dropout", "optim.clip_norm"):
        assert key in reason
    assert "\n" not in reason


def test_xla_convolutions_are_declined_on_cpu_unless_forced() -> None:
    from experiments.sweep.vectorized import plan_vectorized

    if jax.default_backend() != "cpu":
        pytest.skip("the decline policy measured here is XLA-CPU's")
    # LeNet5's default CHWN layout has no XLA convolution (patch matmuls): vectorised
    trials = [trial(i, [f"seed={i}"]) for i in range(3)]
    assert plan_vectorized("lenet5", trials, force=False)[0] == [trials]
    # in the NHWC layout vmap makes its convolutions grouped ones: declined
    trials = [trial(i, [f"seed={i}", "model.layout=NHWC"]) for i in range(3)]
    groups, fallback, reason = plan_vectorized("lenet5", trials, force=False)
    assert groups == [] and [t.id for t in fallback] == ["000", "001", "002"]
    assert reason.startswith("--vectorize declined for lenet5 on cpu: vmapped convolutions measured ")
    assert "--force-vectorize" in reason and "\n" not in reason
    groups, fallback, reason = plan_vectorized("lenet5", trials, force=True)
    assert [[t.id for t in g] for g in groups] == [["000", "001", "002"]] and fallback == [] and reason == ""
    # the MLP has no convolution: never declined
    assert _plan([trial(i, [f"seed={i}"]) for i in range(3)])[0] == [["000", "001", "002"]]


def test_summary_is_valid_json_with_the_group_fields(both: dict) -> None:
    summary = json.loads((both["vec"] / both["ids"][0] / "summary.json").read_text())
    assert summary["wall_time_s"] * (len(GRID) + 1) == pytest.approx(summary["group_wall_time_s"], abs=0.01)
    assert Path(summary["run_dir"]) == both["vec"] / both["ids"][0]
    assert (both["vec"] / both["ids"][0] / ".hydra" / "overrides.yaml").is_file()


def test_a_group_never_writes_into_an_existing_run(both: dict) -> None:
    from experiments.errors import UserError
    from experiments.sweep.vectorized import run_vectorized_group

    before = (both["vec"] / both["ids"][0] / "summary.json").read_bytes()
    with pytest.raises(UserError, match="already exists and is not empty"):
        run_vectorized_group("mlp_mnist", [trial(i, o) for i, o in enumerate(GRID)], both["vec"])
    assert (both["vec"] / both["ids"][0] / "summary.json").read_bytes() == before


def test_vectorised_trials_have_run_log_and_hydra_files_like_the_others(both: dict) -> None:
    for i in both["ids"][:4]:
        vec = both["vec"] / i
        assert {p.name for p in (vec / ".hydra").iterdir()} >= {"config.yaml", "hydra.yaml", "overrides.yaml"}
        hydra = yaml.safe_load((vec / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["runtime"]["output_dir"] == str(vec) and hydra["job"]["name"] == "nnrun"
        assert yaml.safe_load((vec / ".hydra" / "config.yaml").read_text()) == yaml.safe_load(
            (vec / "config.yaml").read_text())
        log = (vec / "run.log").read_text()
        assert f"in {vec}, trained in one vectorised group with trials 000 001 002 003 004" in log
        assert "epoch 1/2" in log and "epoch 2/2" in log and "run completed: test loss" in log
