"""A plain `pip install .` (a wheel, not the editable checkout) carries the configs and MNIST."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_config_tree_and_mnist_and_finds_them(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")  # the build backend; offline build, no isolation
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True)
    (wheel,) = tmp_path.glob("nnrun-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("experiments/conf/lenet5.yaml", "experiments/conf/_base.yaml", "experiments/conf/model/lenet5.yaml",
                 "experiments/data/mnist/train-images-idx3-ubyte.gz", "experiments/data/mnist/README.md",
                 "cli/main.py"):
        assert name in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("from experiments.config import config_dir, experiment_names; import experiments.data.mnist as m; "
             "print(config_dir()); print(m.PACKAGED_MNIST_DIR); print(','.join(experiment_names()))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(site / "experiments" / "conf")
    assert out[1] == str(site / "experiments" / "data" / "mnist")
    assert {"lenet5", "lstm_mnist", "hopfield_letters"} <= set(out[2].split(","))
