"""Shared helpers for the CLI, config and resume tests.

- Runs go to tmp_path (NNRUN_OUTPUTS or hydra.run.dir), never to ./outputs.
- XLA's persistent compilation cache is on for the whole session (a temporary directory,
  shared with the `nnrun` subprocesses through the environment): every tiny run compiles
  the same few programs, and compiling them is most of a tiny run's time on CPU.
- `nnrun_cli` runs the Typer app in-process; `nnrun_main` goes through `cli.main.run`
  (the console entry, with its one-line error formatting); `nnrun_proc` runs the real
  console script.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

# two CPU devices on any machine (JAX reads this when it starts; experiments/__init__.py would
# take one per core), so tests of a batch split over devices do not depend on the CI machine
os.environ["JAX_NUM_CPU_DEVICES"] = "2"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jax_cache = tempfile.mkdtemp(prefix="nnrun-tests-xla-cache-")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
if "jax" in sys.modules:  # imported before this conftest: the env vars above came too late
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _keep_pytest_streams_open() -> None:
    """Hydra configures logging with dictConfig, which closes every existing handler.
    absl's handler (orbax imports absl) holds the sys.stderr it saw when it was created:
    under pytest that is a capture stream that is no longer sys.stderr later, so absl
    closes it and every later test loses its stderr ("I/O operation on closed file").
    A real `nnrun` process never hits this (its stderr is the real one, which absl
    leaves open), so the patch lives here, for the tests only: flush, never close."""
    import logging

    from absl import logging as absl_logging

    def close(self) -> None:
        self.flush()
        logging.Handler.close(self)

    absl_logging.PythonHandler.close = close


_keep_pytest_streams_open()

REPO = Path(__file__).resolve().parents[1]
NNRUN = Path(sys.executable).parent / "nnrun"
if not NNRUN.exists():  # pragma: no cover - a venv always has it next to python
    NNRUN = Path(shutil.which("nnrun") or "nnrun")

# A LeNet5 run of a few seconds: 1500 train / 500 val / 1000 test, 15 steps per epoch.
TINY = [
    "data.train_subset=2000",
    "data.val_size=500",
    "data.test_subset=1000",
    "trainer.epochs=2",
    "trainer.batch_size=100",
    "trainer.log_every=5",
    "trainer.progress=false",
    "trainer.plots=false",
]
TINY_STEPS = 30  # 2 epochs x (1500 // 100)

# Fashion-MNIST for the tests that need a real copy (the four .gz files): the directory in
# $NNRUN_TEST_FASHION_MNIST_DIR, else ../shared/data/fashion-mnist next to the repository.
FASHION_ENV = "NNRUN_TEST_FASHION_MNIST_DIR"
FASHION_TEST_DIR = Path(os.environ.get(FASHION_ENV) or REPO.parent / "shared" / "data" / "fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION_TEST_DIR.is_dir(),
    reason=f"Fashion-MNIST test copy not found at {FASHION_TEST_DIR}; set {FASHION_ENV}=DIR (a directory with "
    "the four train-/t10k- .gz files) to run these tests",
)

USER_ENV = ("NNRUN_OUTPUTS", "NNRUN_MNIST_DIR", "NNRUN_FASHION_MNIST_DIR", "NNRUN_FASHION_MNIST_MIRROR")


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (to check that nothing was touched)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NNRUN_OUTPUTS in tmp_path, no user data settings, cwd = tmp_path (so that a stray
    relative `outputs/` would land there too). Returns the outputs directory (not created)."""
    for var in USER_ENV:
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "outputs"
    monkeypatch.setenv("NNRUN_OUTPUTS", str(out))
    monkeypatch.chdir(tmp_path)
    return out


def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich tables in a 200-column console, so that no cell is cut short with '…'."""
    from rich.console import Console

    import cli.commands

    monkeypatch.setattr(cli.commands, "console", Console(width=200, no_color=True))
    monkeypatch.setattr(cli.commands, "err_console", Console(width=200, stderr=True, no_color=True))


@pytest.fixture
def nnrun_cli(monkeypatch: pytest.MonkeyPatch, outputs: Path) -> Callable[..., Outcome]:
    """`nnrun ARGS` in-process through typer.testing.CliRunner (bypasses cli.main.run:
    exceptions come back in the result instead of as one-line errors)."""
    from typer.testing import CliRunner

    from cli.main import STATE, app

    _wide_console(monkeypatch)

    def invoke(*args: str) -> Outcome:
        monkeypatch.setitem(STATE, "debug", False)
        result = CliRunner().invoke(app, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Outcome(result.exit_code, result.stdout, result.stderr if result.stderr_bytes is not None else "")

    return invoke


@pytest.fixture
def nnrun_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, outputs: Path) -> Callable[..., Outcome]:
    """`nnrun ARGS` in-process through the console entry `cli.main.run` (one-line errors)."""
    from cli import main

    _wide_console(monkeypatch)

    def invoke(*args: str) -> Outcome:
        monkeypatch.setitem(main.STATE, "debug", False)
        monkeypatch.setattr(sys, "argv", ["nnrun", *args])
        capsys.readouterr()
        try:
            main.run()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return invoke


def proc_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in USER_ENV}
    env.update({"COLUMNS": "200", "PYTHONUNBUFFERED": "1", **extra})
    return env


def nnrun_proc(*args: str, cwd: Path, timeout: float = 120, **env: str) -> Outcome:
    """The real console script, as a user runs it."""
    p = subprocess.run([str(NNRUN), *args], cwd=cwd, env=proc_env(**env), capture_output=True, text=True,
                       timeout=timeout)
    return Outcome(p.returncode, p.stdout, p.stderr)


def assert_one_line_error(outcome: Outcome, *fragments: str) -> str:
    """A failed command: non-zero exit, one `nnrun: error:` line on stderr, no traceback."""
    assert outcome.code not in (0, None), outcome
    assert "Traceback" not in outcome.err and "Traceback" not in outcome.out, outcome.err
    lines = [ln for ln in outcome.err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{outcome.err}"
    assert lines[0].startswith("nnrun: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny LeNet5 run (plots on), trained in-process once for the session.

    Returns {"dir": run directory, "outcome": Outcome}. Tests may add files to it
    (eval.json) but must not change what the run wrote."""
    from typer.testing import CliRunner

    from cli.main import STATE, app

    base = tmp_path_factory.mktemp("trained")
    run_dir = base / "lenet5-run"
    with pytest.MonkeyPatch.context() as mp:
        for var in USER_ENV:
            mp.delenv(var, raising=False)
        mp.setenv("NNRUN_OUTPUTS", str(base / "outputs"))
        mp.chdir(base)
        _wide_console(mp)
        mp.setitem(STATE, "debug", False)
        args = ["train", "conf=lenet5", *TINY, "trainer.plots=true", f"hydra.run.dir={run_dir}"]
        result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return {"dir": run_dir, "outcome": Outcome(result.exit_code, result.stdout, ""), "base": base}


def restore_raw(checkpoint_dir: Path, which: str = "last", step: Optional[int] = None) -> tuple[dict, int]:
    """A checkpoint as the nested dict of numpy arrays orbax wrote (no target needed)."""
    import orbax.checkpoint as ocp

    root = Path(checkpoint_dir) / which
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
    step = steps[-1] if step is None else step
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(root / str(step) / "default"), step
