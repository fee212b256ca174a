"""A sweep's trials through Hydra launcher plugins (experiments/sweep/launchers.py).

Every trial is one Hydra job that trains exactly the trial's config in
<sweep_dir>/<trial id>/, with the files `nnrun train` writes; a trial that fails leaves a
failed summary.json and the others finish.

- `basic` (Hydra's own in-process launcher) needs nothing more than nnrun;
- `ray` (a local Ray cluster that the launcher starts) and `submitit_local` run the
  trials in worker processes; they are skipped without `pip install 'nnrun[cluster]'`.
"""
from __future__ import annotations

import pickle
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from experiments.errors import UserError
from experiments.sweep.launchers import Trial, run_trial, run_with_hydra_launcher
from conftest import read_json

# One epoch of 4 steps: 400 train / 100 validation / 200 test examples.
TINY = [
    "data.train_subset=500",
    "data.val_size=100",
    "data.test_subset=200",
    "trainer.epochs=1",
    "trainer.batch_size=100",
    "trainer.log_every=5",
    "trainer.progress=false",
    "trainer.plots=false",
]


@pytest.fixture(scope="module")
def conf() -> str:
    """The fastest experiment there is: the MLP when it exists, else LeNet5."""
    from experiments.config import experiment_names
    from experiments.models import MODELS

    return "mlp_mnist" if "mlp_mnist" in experiment_names() and "mlp" in MODELS.names() else "lenet5"


def tiny_trials(n: int, failing: bool = False, root: Path = Path("/nonexistent")) -> list[Trial]:
    """`n` trials that differ in learning rate and seed; with `failing`, one more whose
    data directory does not exist (it passes validation and fails while loading data)."""
    trials = [Trial(f"{i:03d}", [*TINY, f"optim.lr={0.01 / (i + 1)}", f"seed={i}"], {"optim.lr": 0.01 / (i + 1)})
              for i in range(n)]
    if failing:
        trials.append(Trial(f"{n:03d}", [*TINY, f"data.root={root / 'missing'}"], {}))
    return trials


def expected(conf: str, trial: Trial) -> tuple[dict, list[str]]:
    """What `nnrun train conf=CONF <trial overrides>` would train (config.yaml) and the
    overrides Hydra would record for it."""
    from experiments import hydra_bridge as hb
    from experiments.config import validate

    cfg, overrides = hb.compose(conf, trial.overrides)
    raw = validate(hb.task_config(cfg)).raw
    return OmegaConf.to_container(OmegaConf.masked_copy(raw, [k for k in raw if k != "resume"])), overrides


def assert_trial_dirs(sweep_dir: Path, conf: str, trials: list[Trial], failed: tuple[str, ...] = ()) -> None:
    assert sorted(p.name for p in sweep_dir.iterdir() if not p.name.startswith(".")) == sorted(t.id for t in trials)
    for trial in trials:
        run_dir = sweep_dir / trial.id
        summary = read_json(run_dir / "summary.json")
        assert summary["status"] == ("failed" if trial.id in failed else "completed"), summary
        assert summary["run_dir"] == str(run_dir) and summary["experiment"] == conf
        config, overrides = expected(conf, trial)
        assert OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")) == config, trial.id
        assert yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) == overrides
        hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
        assert hydra.job.config_name == conf and hydra.runtime.output_dir == str(run_dir)
        assert (run_dir / "run.log").is_file()
        if trial.id not in failed:
            assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "checkpoints").is_dir()
    assert {read_json(sweep_dir / t.id / "summary.json")["seed"] for t in trials if t.id not in failed} == \
        {int(t.overrides[-1].split("=")[1]) for t in trials if t.id not in failed}


def child_processes() -> list:
    """This process's live children (none to check without psutil, which Ray brings)."""
    try:
        import psutil
    except ImportError:
        return []
    return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


# ---------------------------------------------------------------------------- checks before any job


def test_bad_trial_fails_before_any_job(outputs: Path, conf: str) -> None:
    trials = [*tiny_trials(1), Trial("001", [*TINY, "optim.lr=-1"], {})]
    with pytest.raises(UserError, match=r"trial 001: bad value for 'optim.lr'"):
        run_with_hydra_launcher(conf, trials, outputs / "sweep", ["hydra/launcher=basic"])
    assert not (outputs / "sweep").exists()


@pytest.mark.parametrize("overrides, message", [
    (["optim.lr=0.1"], "'optim.lr=0.1' is not a launcher setting"),
    (["hydra/launcher=no_such_launcher"], "unknown Hydra launcher in 'hydra/launcher=no_such_launcher'; installed: "
                                          "basic"),
])
def test_launcher_override_errors(outputs: Path, conf: str, overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        run_with_hydra_launcher(conf, tiny_trials(1), outputs / "sweep", overrides)
    assert not (outputs / "sweep").exists()


def test_trial_ids_must_differ(outputs: Path, conf: str) -> None:
    trials = tiny_trials(2)
    trials[1].id = trials[0].id
    with pytest.raises(UserError, match="trial id '000' is used twice"):
        run_with_hydra_launcher(conf, trials, outputs / "sweep", ["hydra/launcher=basic"])


def test_task_function_pickles_by_reference() -> None:
    """Ray and submitit ship the task to workers: it must be the installed function."""
    assert pickle.loads(pickle.dumps(run_trial)) is run_trial


def test_joining_a_ray_cluster_drops_the_object_store_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.sweep.launchers import _ray_existing_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert _ray_existing_cluster(["hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2"]) == []
    assert _ray_existing_cluster(["hydra.launcher.ray.init.address=auto"]) == \
        ["++hydra.launcher.ray.init.object_store_memory=null"]
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert _ray_existing_cluster(["hydra/launcher=ray"]) == ["++hydra.launcher.ray.init.object_store_memory=null"]


# ---------------------------------------------------------------------------- launchers


def test_basic_launcher_runs_each_trial_in_its_directory(outputs: Path, conf: str, tmp_path: Path) -> None:
    """Hydra's in-process launcher: the trial-to-job mapping without any worker process."""
    trials = tiny_trials(1, failing=True, root=tmp_path)
    sweep_dir = outputs / "sweep"
    run_with_hydra_launcher(conf, trials, sweep_dir, ["hydra/launcher=basic"])
    assert_trial_dirs(sweep_dir, conf, trials, failed=("001",))
    assert "does not exist" in read_json(sweep_dir / "001" / "summary.json")["error"]


@pytest.mark.slow  # starts a local Ray cluster: ~25 s
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # JAX's warning on Popen; the child execs at once
def test_ray_launcher_on_a_local_cluster(outputs: Path, conf: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`hydra/launcher=ray`: the launcher starts a local Ray cluster (2 CPUs, one trial
    per CPU) and nnrun shuts it down afterwards."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # else Ray writes a token to ~/.ray
    ray_tmp = tempfile.mkdtemp(prefix="nnrun-ray-")  # short: Ray's socket paths must fit in 107 bytes
    trials = tiny_trials(2, failing=True, root=tmp_path)
    sweep_dir = outputs / "sweep"
    try:
        run_with_hydra_launcher(conf, trials, sweep_dir, [
            "hydra/launcher=ray",
            "hydra.launcher.ray.init.num_cpus=2",
            "hydra.launcher.ray.init.include_dashboard=false",
            f"hydra.launcher.ray.init._temp_dir={ray_tmp}",
        ])
        assert not ray.is_initialized(), "the local Ray cluster the sweep started is still up"
        assert child_processes() == []
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert_trial_dirs(sweep_dir, conf, trials, failed=("002",))


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_submitit_local_launcher(outputs: Path, conf: str) -> None:
    """`hydra/launcher=submitit_local`: each trial in its own subprocess, as on SLURM."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    trials = tiny_trials(2)
    sweep_dir = outputs / "sweep"
    run_with_hydra_launcher(conf, trials, sweep_dir, ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"])
    assert_trial_dirs(sweep_dir, conf, trials)
    assert child_processes() == []
    logs = list((sweep_dir / ".submitit").rglob("*_log.err"))
    assert len(logs) == len(trials), logs
