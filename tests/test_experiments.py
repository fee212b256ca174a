"""The experiments that prove the engine: timeseries_seed (regression on windows of one
series, against persistence) and autoencoder_mnist (reconstruction), each through train,
eval, resume, sweep and sweep --vectorize, at a few seconds' size."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import read_json, read_metrics

SIZES = {
    "timeseries_seed": ["trainer.epochs=3", "trainer.progress=false"],  # 15 steps per epoch
    "autoencoder_mnist": ["data.train_subset=1200", "data.val_size=200", "data.test_subset=300",
                          "trainer.epochs=2", "trainer.batch_size=100", "trainer.log_every=5",
                          "trainer.progress=false"],
}
PRIMARY = {"timeseries_seed": "rmse", "autoencoder_mnist": "mse"}
FIGURE = {"timeseries_seed": "forecast.png", "autoencoder_mnist": "reconstructions.png"}


@pytest.mark.parametrize("conf", [pytest.param(c, marks=pytest.mark.slow) if c == "autoencoder_mnist" else c for c in sorted(SIZES)])
def test_train_eval_and_resume(conf: str, nnrun_cli, tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    assert nnrun_cli("train", f"conf={conf}", *SIZES[conf], f"hydra.run.dir={full}").code == 0
    summary = read_json(full / "summary.json")
    metric = PRIMARY[conf]
    assert summary["status"] == "completed" and summary["best_metric"] == metric
    assert summary["metrics"][metric] == "min"
    assert (full / "plots" / FIGURE[conf]).stat().st_size > 10_000
    assert (full / "plots" / f"{metric}.png").is_file()
    if conf == "timeseries_seed":
        assert summary["test"]["persistence_rmse"] > 0 and summary["test"]["rmse"] > 0

    # eval of the last checkpoint reproduces the last parameters' test metrics, the best's the summary's
    assert nnrun_cli("eval", str(full), "--last").code == 0
    assert read_json(full / "eval.json")[metric] == pytest.approx(summary["test_last"][metric], rel=1e-5)
    assert nnrun_cli("eval", str(full)).code == 0
    assert read_json(full / "eval.json")[metric] == pytest.approx(summary["test"][metric], rel=1e-5)

    # stopped part-way (a max_steps cap) and resumed: the uninterrupted run's records and result
    steps = summary["steps_done"]
    assert nnrun_cli("train", f"conf={conf}", *SIZES[conf], f"trainer.max_steps={steps // 2 + 1}",
                     f"hydra.run.dir={part}").code == 0
    assert nnrun_cli("train", f"resume={part}", "trainer.max_steps=null").code == 0
    resumed = read_json(part / "summary.json")
    assert resumed["test"] == pytest.approx(summary["test"], rel=1e-5)
    assert resumed["best"] == pytest.approx(summary["best"], rel=1e-5)
    ours, theirs = _records(part), _records(full)
    assert [r[:2] for r in ours] == [r[:2] for r in theirs]
    assert [r[2] for r in ours] == pytest.approx([r[2] for r in theirs], rel=1e-5)


def _records(run_dir: Path) -> list[tuple]:
    return [(r["split"], r["step"], r["loss"]) for r in read_metrics(run_dir)]


@pytest.mark.slow  # two sweeps per experiment: ~27 s each; the vectorised-sweep tests cover ranking too
@pytest.mark.parametrize("conf", sorted(SIZES))
def test_sweep_and_vectorized_sweep_rank_by_the_declared_metric(conf: str, nnrun_main, outputs: Path) -> None:
    metric = PRIMARY[conf]
    results = {}
    for mode in ("--no-vectorize", "--vectorize"):
        sweep_dir = outputs / mode.strip("-")
        out = nnrun_main("sweep", f"conf={conf}", *SIZES[conf], "seed=0,1", mode, f"hydra.sweep.dir={sweep_dir}")
        assert out.code == 0, out.err
        with open(sweep_dir / "results.csv") as f:
            results[mode] = list(csv.DictReader(f))
        spec = read_json(sweep_dir / "sweep.json")
        assert (spec["metric"], spec["direction"]) == (f"best.{metric}", "min")
    plain, vec = results["--no-vectorize"], results["--vectorize"]
    assert set(plain[0]) >= {f"best.{metric}", f"test.{metric}"} and "test.accuracy" not in plain[0]
    for a, b in zip(plain, vec):
        assert a["status"] == b["status"] == "completed"
        # one vmapped program sums in another order than two separate ones: close, not bit-equal
        assert float(b[f"test.{metric}"]) == pytest.approx(float(a[f"test.{metric}"]), rel=2e-3)
    assert read_json(outputs / "vectorize" / "000" / "summary.json")["vectorized"] is True
