"""Extending nnrun without editing the installed package (issue 13): user modules that
register models (a .py file or a module, named by --plugin or a config's `plugins:`, or an
installed package's `nnrun.plugins` entry point) and user config folders (./conf,
--config-dir, hydra.searchpath), searched before nnrun's own.

Each test registers its own model names: registries live for the whole test process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY, assert_one_line_error, read_json

SMALL = [*TINY, "trainer.epochs=1"]

MODULE = '''
from dataclasses import dataclass
from flax import linen as nn
from experiments.models import DataInfo, ModelConfig, register_model

@dataclass
class PerceptronConfig(ModelConfig):
    name: str = "{name}"
    hidden: int = 32

class Perceptron(nn.Module):
    hidden: int
    outputs: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.outputs)(x)

@register_model("{name}", schema=PerceptronConfig, description="one-hidden-layer perceptron")
def build(cfg: PerceptronConfig, info: DataInfo) -> Perceptron:
    return Perceptron(cfg.hidden, info.num_classes or info.output_size)
'''


@pytest.fixture(autouse=True)
def _forget_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Each test's plugins are forgotten after it: their models, their modules, and the
    folder a file plugin adds to $PYTHONPATH (for launcher workers). Later tests, and the
    launchers' worker processes, never meet them."""
    from experiments import registry
    from experiments.models import MODELS

    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    models, loaded = set(MODELS.names()), dict(registry._loaded)
    yield
    for name in set(MODELS.names()) - models:
        MODELS.unregister(name)
    registry._loaded.clear()
    registry._loaded.update(loaded)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


def user_folder(root: Path, name: str, module: str | None = None) -> Path:
    """The README's recipe: one module and one YAML in conf/model/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module or name}.py").write_text(MODULE.format(name=name))
    (root / "conf" / "model").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "model" / f"{name}.yaml").write_text(
        f"defaults:\n  - /schema/model/{name}@_here_\n  - _self_\nhidden: 16\n")
    return root


def test_plugin_file_and_cwd_conf_train_eval_and_list(nnrun_cli, nnrun_main, outputs: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder = user_folder(tmp_path / "project", "perceptron_a")
    monkeypatch.chdir(folder)
    run_dir = tmp_path / "run"
    result = nnrun_cli("train", "conf=lenet5", "model=perceptron_a", "--plugin", "perceptron_a.py", *SMALL,
                       f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.out
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"] == {"name": "perceptron_a", "hidden": 16}  # the user's YAML, on the plugin's schema
    assert config["plugins"] == [str(folder / "perceptron_a.py")]  # absolute: eval and resume find it anywhere
    assert read_json(run_dir / "summary.json")["status"] == "completed"
    monkeypatch.chdir(tmp_path)  # elsewhere: the run's config names the plugin
    assert nnrun_cli("eval", str(run_dir)).code == 0
    assert read_json(run_dir / "eval-best-test.json")["accuracy"] == pytest.approx(
        read_json(run_dir / "summary.json")["test"]["accuracy"], abs=1e-6)
    listed = nnrun_cli("--plugin", str(folder / "perceptron_a.py"), "list").out
    assert "perceptron_a" in listed and "one-hidden-layer perceptron" in listed


def test_plugins_listed_in_an_experiment_of_the_users_conf(nnrun_cli, outputs: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder = user_folder(tmp_path / "project", "perceptron_b", module="my_models")
    (folder / "conf" / "mine.yaml").write_text(textwrap.dedent("""\
        # nnrun train conf=mine
        # a perceptron on MNIST, from the user's own folder
        defaults: [_base, {model: perceptron_b}, {data: mnist}, {optim: adam}, {objective: classification},
                   {trainer: gradient}, _self_]
        plugins: [my_models]
        """))
    monkeypatch.chdir(folder)
    result = nnrun_cli("train", "conf=mine", *SMALL, "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.code == 0, result.out
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["plugins"] == ["my_models"]
    assert "mine" in nnrun_cli("list").out


def test_config_dir_and_hydra_searchpath_are_searched_before_nnruns_own(nnrun_cli, outputs: Path,
                                                                         tmp_path: Path) -> None:
    folder = user_folder(tmp_path / "elsewhere", "perceptron_c")
    (folder / "conf" / "lenet5.yaml").write_text("defaults: [_base, {model: lenet5}, {data: mnist}, "
                                                 "{trainer: gradient}, _self_]\nseed: 77\n")
    plugin = f"--plugin={folder / 'perceptron_c.py'}"
    shadowed = nnrun_cli("train", "--config-dir", str(folder / "conf"), "conf=lenet5", "--cfg")
    assert shadowed.code == 0 and yaml.safe_load(shadowed.out)["seed"] == 77  # the user's lenet5 first
    os.environ.pop("NNRUN_CONFIG_DIR", None)  # --config-dir sets it for child processes
    searched = nnrun_cli("train", "conf=lenet5", plugin, "model=perceptron_c",
                         f"hydra.searchpath=[file://{folder / 'conf'}]", "--cfg")
    assert searched.code == 0, searched.out
    cfg = yaml.safe_load(searched.out)
    assert cfg["model"]["name"] == "perceptron_c" and cfg["seed"] == 0  # groups found, experiment still nnrun's


def test_entry_point_plugins_of_installed_packages(nnrun_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments import registry

    site = tmp_path / "site"
    (site / "nnrun_toy-0.1.dist-info").mkdir(parents=True)
    (site / "nnrun_toy-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: nnrun-toy\nVersion: 0.1\n")
    (site / "nnrun_toy-0.1.dist-info" / "entry_points.txt").write_text("[nnrun.plugins]\ntoy = nnrun_toy_models\n")
    (site / "nnrun_toy_models.py").write_text(MODULE.format(name="perceptron_d"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    result = nnrun_cli("list")
    assert result.code == 0 and "perceptron_d" in result.out


def test_a_file_plugins_classes_unpickle_in_a_worker_process(tmp_path: Path) -> None:
    """Hydra's Ray and submitit launchers pickle the ConfigStore, plugin schemas included, to
    worker processes, which unpickle it before any nnrun code runs there."""
    import pickle

    from experiments.registry import load_plugin

    folder = user_folder(tmp_path / "project", "perceptron_e")
    module = load_plugin(str(folder / "perceptron_e.py"))
    assert module.__name__ == "perceptron_e"
    payload = pickle.dumps(module.PerceptronConfig(hidden=7))
    # then, as in the worker's run_trial, the config's plugins are loaded: the same module, not twice
    probe = ("import pickle, sys; print(pickle.loads(sys.stdin.buffer.read())); "
             "from experiments.registry import load_plugin; from experiments.models import MODELS; "
             f"load_plugin({str(folder / 'perceptron_e.py')!r}); print(MODELS.get('perceptron_e').description)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # what a launcher's worker inherits
    out = subprocess.run([sys.executable, "-c", probe], input=payload, cwd=tmp_path, env=env, capture_output=True,
                         check=True).stdout.decode()
    assert "hidden=7" in out and "perceptron_e" in out and "one-hidden-layer perceptron" in out
    json_like = tmp_path / "json.py"  # a stem that names another module keeps a private name
    json_like.write_text("X = 1\n")
    assert load_plugin(str(json_like)).__name__.startswith("nnrun_plugin_json_")


@pytest.mark.parametrize("plugin, fragments", [
    ("missing.py", ("plugin file", "missing.py does not exist")),
    ("no_such_module_xyz", ("plugin no_such_module_xyz could not be imported", "No module named")),
    ("broken.py", ("broken.py failed while loading", "ZeroDivisionError")),
])
def test_bad_plugins_are_one_line_errors(nnrun_main, outputs: Path, tmp_path: Path, plugin: str,
                                         fragments: tuple) -> None:
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    assert_one_line_error(nnrun_main("train", "conf=lenet5", "--plugin", plugin, "--cfg"), *fragments)
    assert not outputs.exists()


@pytest.mark.slow
def test_readme_recipe_against_an_installed_wheel(tmp_path: Path) -> None:
    """`pip install .` (a wheel, no editable checkout), then in an empty folder: one module,
    one YAML, one command. No download: the wheel goes into a fresh venv that borrows the
    test environment's dependencies (never its editable nnrun)."""
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True)
    (wheel,) = (tmp_path / "dist").glob("nnrun-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "test-deps.pth").write_text("\n".join(deps) + "\n")  # plain paths: no editable-install hook
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)

    folder = user_folder(tmp_path / "empty", "perceptron")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NNRUN_", "PYTHON"))}
    env["NNRUN_OUTPUTS"] = str(tmp_path / "outputs")
    where = subprocess.run([str(python), "-c", "import experiments; print(experiments.__file__)"], cwd=folder,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site), where  # the installed wheel, not the repository
    p = subprocess.run([str(env_dir / "bin" / "nnrun"), "train", "conf=lenet5", "model=perceptron",
                        "--plugin", "perceptron.py", *SMALL], cwd=folder, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    (run,) = (tmp_path / "outputs" / "lenet5").iterdir()
    assert run.name.endswith("-model=perceptron")
    assert read_json(run / "summary.json")["status"] == "completed"
