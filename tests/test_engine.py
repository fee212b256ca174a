"""The training engine: one loop driver for every family, objectives chosen in config,
general batches (dicts, windows, masks, augmentation), stops at any point, BatchNorm
state, and "one module + one YAML" for a new model, dataset and objective."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import TINY, TINY_STEPS, assert_one_line_error, read_json, read_metrics, restore_raw
from experiments.data import DataConfig, Dataset, Split, Windows, register_dataset
from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.objectives import Metric, Objective, ObjectiveConfig, build_objective, register_objective, weights
from experiments.training import TrainerConfig, TrainerEntry, register_trainer

STEPS_PER_EPOCH = 15


# ---------------------------------------------------------------------------- a toy family, registered here


@dataclass
class ToyDataConfig(DataConfig):
    name: str = "toy_sums"
    val_size: int = 64
    count: int = 512


def load_toy(cfg: ToyDataConfig) -> Dataset:
    """integer vectors; the target is their sum as a float (no classes)"""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(cfg.count + 128, 4)).astype(np.int32)  # integer inputs
    y = x.sum(1, keepdims=True).astype(np.float32)
    n, v = cfg.count, cfg.val_size
    return Dataset("toy_sums", Split(x[:n - v], y[:n - v]), Split(x[n - v:n], y[n - v:n]), Split(x[n:], y[n:]))


@dataclass
class ToyModelConfig(ModelConfig):
    name: str = "toy_linear"
    batchnorm: bool = False


class ToyLinear(nn.Module):
    outputs: int
    batchnorm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = x.astype(jnp.float32)
        if self.batchnorm:
            h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(h)
        return nn.Dense(self.outputs)(h)


def build_toy(cfg: ToyModelConfig, info: DataInfo) -> ToyLinear:
    """a dense layer (with BatchNorm in front if asked)"""
    return ToyLinear(info.output_size, cfg.batchnorm)


@dataclass
class AbsErrorConfig(ObjectiveConfig):
    name: str = "toy_abs_error"


class AbsError(Objective):
    metrics = (Metric("mean_abs", "min"), Metric("loss", "min"))

    def sums(self, outputs, batch):
        w = weights(batch, (outputs.shape[0],))
        err = jnp.abs(outputs - batch["y"]).mean(-1)
        return {"loss": jnp.sum(err * w), "weight": jnp.sum(w)}

    def finalize(self, s):
        return {"loss": s["loss"] / s["weight"], "mean_abs": s["loss"] / s["weight"]}


def build_abs(cfg: AbsErrorConfig) -> AbsError:
    """mean absolute error"""
    return AbsError()


TOY_YAMLS = {
    "toy.yaml": "defaults:\n  - _base\n  - model: toy_linear\n  - data: toy_sums\n  - objective: toy_abs_error\n"
                "  - optim: adam\n  - schedule: constant\n  - trainer: gradient\n  - _self_\n"
                "optim:\n  lr: 0.05\ntrainer:\n  epochs: 3\n  batch_size: 32\n  log_every: 4\n  progress: false\n",
    "model/toy_linear.yaml": "defaults:\n  - /schema/model/toy_linear@_here_\n  - _self_\n",
    "data/toy_sums.yaml": "defaults:\n  - /schema/data/toy_sums@_here_\n  - _self_\n",
    "objective/toy_abs_error.yaml": "defaults:\n  - /schema/objective/toy_abs_error@_here_\n  - _self_\n",
}


@pytest.fixture
def toy_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    conf = tmp_path / "userconf"
    for name, text in TOY_YAMLS.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(text)
    monkeypatch.setenv("NNRUN_CONFIG_DIR", str(conf))
    return conf


def test_a_model_dataset_and_objective_from_one_module_and_yamls_train_through_the_cli(nnrun_cli, toy_conf,
                                                                                      tmp_path: Path) -> None:
    run_dir = tmp_path / "toy-run"
    result = nnrun_cli("train", "conf=toy", f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.out
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["objective"] == "toy_abs_error"
    assert summary["metrics"] == {"mean_abs": "min", "loss": "min"} and summary["best_metric"] == "mean_abs"
    first = next(r for r in read_metrics(run_dir) if r["split"] == "train")
    assert summary["test"]["mean_abs"] < 0.5 * first["mean_abs"]  # it learned the sum
    assert "accuracy" not in json.dumps(summary)  # nothing outside classification names it
    evaluated = nnrun_cli("eval", str(run_dir), "--last")
    assert evaluated.code == 0, evaluated.out
    assert read_json(run_dir / "eval.json")["mean_abs"] == pytest.approx(summary["test_last"]["mean_abs"], rel=1e-5)


def test_batchnorm_statistics_are_trained_saved_resumed_and_used_by_eval(nnrun_cli, toy_conf, tmp_path: Path) -> None:
    full, part = tmp_path / "bn-full", tmp_path / "bn-part"
    assert nnrun_cli("train", "conf=toy", "model.batchnorm=true", f"hydra.run.dir={full}").code == 0
    stopped = nnrun_cli("train", "conf=toy", "model.batchnorm=true", "trainer.max_steps=20", f"hydra.run.dir={part}")
    assert stopped.code == 0, stopped.out
    resumed = nnrun_cli("train", f"resume={part}", "trainer.max_steps=null")
    assert resumed.code == 0, resumed.out
    a, b = read_json(full / "summary.json"), read_json(part / "summary.json")
    assert a["test"] == pytest.approx(b["test"], rel=1e-5)  # running statistics carried through the resume
    state, _ = restore_raw(part / "checkpoints")
    stats = state["inner"]["model_state"]["batch_stats"]["BatchNorm_0"]
    assert np.all(np.asarray(stats["mean"]) > 1.0)  # moved from 0 towards the inputs' mean (2.0)
    assert nnrun_cli("eval", str(part), "--last").code == 0
    assert read_json(part / "eval.json")["mean_abs"] == pytest.approx(b["test_last"]["mean_abs"], rel=1e-5)


def test_outputs_that_do_not_fit_the_objective_fail_before_training(nnrun_main, tmp_path: Path) -> None:
    run_dir = tmp_path / "mismatch"
    line = assert_one_line_error(nnrun_main("train", "conf=lenet5", *TINY, "objective=regression",
                                            f"hydra.run.dir={run_dir}"), "(2, 10)", "(2,)")
    assert "outputs" in line
    assert not (run_dir / "checkpoints").exists()


# ---------------------------------------------------------------------------- trainers beyond gradients


@dataclass
class RunningMeanConfig(TrainerConfig):
    name: str = "toy_running_mean"
    rate: float = 0.5


class RunningMean:
    """An update without a loss gradient (as contrastive divergence is): the prediction
    moves towards each batch's mean target."""

    def __init__(self, objective, rate: float):
        self.objective, self.rate = objective, rate

    def init(self, key, batch):
        return jnp.zeros(batch["y"].shape[1:], jnp.float32)

    def outputs(self, state, batch):
        return jnp.broadcast_to(state, batch["y"].shape)

    def train_step(self, state, batch, rngs):
        sums = self.objective.sums(self.outputs(state, batch), batch)
        return state + self.rate * (batch["y"].mean(0) - state), sums

    def eval_step(self, state, batch):
        return self.objective.sums(self.outputs(state, batch), batch)

    def learning_rate(self, step):
        return None




@dataclass
class ConstantModelConfig(ModelConfig):
    name: str = "toy_constant"


def build_constant(cfg, info):
    """a prediction that the trainer moves itself"""
    return None



@pytest.fixture(scope="module", autouse=True)
def toys():
    """Register the toy entries for this module's tests, then forget them: later tests (and
    the launchers' worker processes, which cannot import this module) never see them."""
    from experiments.data import DATASETS
    from experiments.models import MODELS
    from experiments.objectives import OBJECTIVES
    from experiments.training import TRAINERS

    register_dataset("toy_sums", schema=ToyDataConfig)(load_toy)
    register_model("toy_linear", schema=ToyModelConfig)(build_toy)
    register_objective("toy_abs_error", schema=AbsErrorConfig)(build_abs)
    register_trainer("toy_running_mean", TrainerEntry(
        schema=RunningMeanConfig, description="running mean of the targets (no gradient, no optimizer)",
        steps=lambda exp, data, hp=None: RunningMean(build_objective(exp.objective), exp.trainer.rate)))
    register_trainer("toy_two_player", TrainerEntry(
        schema=RunningMeanConfig, description="a trainer with two optimizer groups (an adversarial one's config)",
        steps=lambda exp, data, hp=None: None, optim_groups=("optim", "optim_d")))
    register_model("toy_constant", schema=ConstantModelConfig, trainer="toy_running_mean")(build_constant)
    register_model("toy_pair", schema=ConstantModelConfig, trainer="toy_two_player")(build_constant)
    yield
    for registry, names in ((DATASETS, ["toy_sums"]), (MODELS, ["toy_linear", "toy_constant", "toy_pair"]),
                            (OBJECTIVES, ["toy_abs_error"]), (TRAINERS, ["toy_running_mean", "toy_two_player"])):
        for name in names:
            registry.unregister(name)


def test_a_trainer_without_gradient_or_optimizer_runs_through_the_driver(nnrun_cli, toy_conf, tmp_path: Path) -> None:
    (toy_conf / "trainer").mkdir()
    (toy_conf / "trainer" / "toy_running_mean.yaml").write_text(
        "defaults:\n  - /schema/trainer/toy_running_mean@_here_\n  - _self_\n")
    (toy_conf / "model" / "toy_constant.yaml").write_text("defaults:\n  - /schema/model/toy_constant@_here_\n  - _self_\n")
    (toy_conf / "running.yaml").write_text(
        "defaults:\n  - _base\n  - model: toy_constant\n  - data: toy_sums\n  - objective: toy_abs_error\n"
        "  - trainer: toy_running_mean\n  - _self_\ntrainer:\n  epochs: 2\n  batch_size: 32\n  log_every: 4\n"
        "  progress: false\n")
    run_dir = tmp_path / "running"
    result = nnrun_cli("train", "conf=running", f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.out
    summary = read_json(run_dir / "summary.json")
    y = load_toy(ToyDataConfig()).test.y
    assert summary["test"]["mean_abs"] == pytest.approx(float(np.abs(y - y.mean()).mean()), rel=0.1)
    assert "lr" not in read_metrics(run_dir)[0]
    restored, _ = restore_raw(run_dir / "checkpoints")
    assert float(np.asarray(restored["inner"]).reshape(-1)[0]) == pytest.approx(float(y.mean()), rel=0.1)


def test_a_trainer_declares_two_optimizer_groups(toy_conf) -> None:
    from experiments import hydra_bridge as hb
    from experiments.config import validate

    (toy_conf / "model" / "toy_pair.yaml").write_text("defaults:\n  - /schema/model/toy_pair@_here_\n  - _self_\n")
    (toy_conf / "trainer").mkdir(exist_ok=True)
    (toy_conf / "trainer" / "toy_two_player.yaml").write_text(
        "defaults:\n  - /schema/trainer/toy_two_player@_here_\n  - _self_\n")
    (toy_conf / "pair.yaml").write_text(
        "defaults:\n  - _base\n  - model: toy_pair\n  - data: toy_sums\n  - objective: toy_abs_error\n"
        "  - optim: adam\n  - optim@optim_d: momentum\n  - schedule: constant\n  - trainer: toy_two_player\n"
        "  - _self_\n")
    exp = validate(hb.task_config(hb.compose("pair", ["optim_d.lr=0.0002", "optim.b1=0.5"])[0]))
    assert set(exp.optims) == {"optim", "optim_d"} and exp.optim is exp.optims["optim"]
    assert exp.optims["optim_d"].name == "momentum" and exp.optims["optim_d"].lr == 0.0002
    assert exp.optim.b1 == 0.5
    with pytest.raises(UserError, match="optim_d.b1"):  # typed by its own optimizer's schema
        validate(hb.task_config(hb.compose("pair", ["+optim_d.b1=0.5"])[0]))


# ---------------------------------------------------------------------------- stops anywhere


class _Stop:
    """A stop request that fires at a chosen point (the real one turns SIGTERM into this flag)."""

    def __init__(self):
        self.fired = False
        self.name = "SIGTERM"

    def __bool__(self) -> bool:
        return self.fired

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


@pytest.mark.parametrize("where", ["mid_epoch", "end_of_last_chunk", "during_validation"])
def test_a_stop_at_any_point_resumes_like_an_uninterrupted_run(where: str, nnrun_cli, trained_run: dict,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import experiments.runner as runner
    from experiments.training import driver

    stop = _Stop()
    monkeypatch.setattr(runner, "StopRequest", lambda: stop)
    chunk, evaluate = driver.run_chunk, driver.Evaluator.__call__
    at = {"mid_epoch": 10, "end_of_last_chunk": STEPS_PER_EPOCH}.get(where)

    def run_chunk(state, *args, **kwargs):
        state, n = chunk(state, *args, **kwargs)
        if at is not None and int(state.step) == at:
            stop.fired = True  # the signal lands while this chunk runs
        return state, n

    def evaluate_and_signal(self, state, split):
        if where == "during_validation":
            stop.fired = True
        return evaluate(self, state, split)

    monkeypatch.setattr(driver, "run_chunk", run_chunk)
    monkeypatch.setattr(driver.Evaluator, "__call__", evaluate_and_signal)
    run_dir = tmp_path / "stopped"
    assert nnrun_cli("train", "conf=lenet5", *TINY, f"hydra.run.dir={run_dir}").code == 130
    assert read_json(run_dir / "summary.json")["status"] == "interrupted"
    monkeypatch.setattr(runner, "StopRequest", _Stop)  # never fires
    assert nnrun_cli("train", f"resume={run_dir}").code == 0
    ours, theirs = read_json(run_dir / "summary.json"), read_json(trained_run["dir"] / "summary.json")
    assert ours["steps_done"] == theirs["steps_done"] == TINY_STEPS
    assert _records(run_dir) == _records(trained_run["dir"])
    assert ours["best"] == theirs["best"] and ours["test"] == pytest.approx(theirs["test"], rel=1e-6)


def test_a_stop_inside_a_chunk_stepping_one_by_one_resumes_like_an_uninterrupted_run(
        nnrun_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With trainer.scan=false the stop is seen after the very step it lands on, in the
    middle of a logging chunk: the cut chunk is logged as partial and, on resume, whole."""
    import experiments.runner as runner

    class StopAfterPolls(_Stop):
        polls = 0

        def __bool__(self) -> bool:
            StopAfterPolls.polls += 1
            return StopAfterPolls.polls > 9  # the loop polls once a step and once a chunk: inside epoch 1

    per_step = [*TINY, "trainer.scan=false"]
    reference, run_dir = tmp_path / "reference", tmp_path / "stopped"
    monkeypatch.setattr(runner, "StopRequest", _Stop)
    assert nnrun_cli("train", "conf=lenet5", *per_step, f"hydra.run.dir={reference}").code == 0
    monkeypatch.setattr(runner, "StopRequest", StopAfterPolls)
    assert nnrun_cli("train", "conf=lenet5", *per_step, f"hydra.run.dir={run_dir}").code == 130
    stopped_at = read_json(run_dir / "summary.json")["steps_done"]
    assert 0 < stopped_at < STEPS_PER_EPOCH and stopped_at % 5 != 0  # inside a chunk
    assert any(r.get("partial") for r in read_metrics(run_dir))
    monkeypatch.setattr(runner, "StopRequest", _Stop)
    assert nnrun_cli("train", f"resume={run_dir}").code == 0
    assert _records(run_dir) == _records(reference)
    ours, theirs = read_json(run_dir / "summary.json"), read_json(reference / "summary.json")
    assert ours["best"] == theirs["best"] and ours["test"] == theirs["test"]


def _records(run_dir: Path) -> list[dict]:
    skip = {"time", "examples_per_s"}
    return [{k: v for k, v in r.items() if k not in skip} for r in read_metrics(run_dir)]


# ---------------------------------------------------------------------------- objectives against references


def test_classification_accuracy_top_k_and_masks_match_a_direct_count() -> None:
    logits = jnp.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 0.0, 2.0]])
    y = jnp.array([0, 1, 1])
    obj = build_objective(build_schema("classification", top_k=2))
    s = obj.sums(logits, {"y": y, "_valid": jnp.array([1.0, 1.0, 0.0])})  # the third is padding
    m = obj.finalize({k: float(v) for k, v in s.items()})
    assert m["accuracy"] == 0.5 and m["top2_accuracy"] == 0.5  # label 1 of row 2 ranks third
    ce = -np.log(np.exp(3) / np.exp([3, 2, 1, 0]).sum()), -np.log(np.exp(1) / np.exp([0, 1, 2, 3]).sum())
    assert m["loss"] == pytest.approx(np.mean(ce), rel=1e-5)
    assert [x.name for x in obj.metrics] == ["accuracy", "top2_accuracy", "loss"]


def test_sequence_objective_counts_only_unmasked_steps() -> None:
    obj = build_objective(build_schema("sequence", target="classes"))
    logits = jax.nn.one_hot(jnp.array([[1, 2, 0], [0, 0, 0]]), 3) * 10.0
    y = jnp.array([[1, 2, 1], [0, 2, 2]])
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])  # lengths 2 and 1: every counted step is right
    m = obj.finalize({k: float(v) for k, v in obj.sums(logits, {"y": y, "mask": mask}).items()})
    assert m["accuracy"] == 1.0
    values = build_objective(build_schema("sequence", target="values"))
    pred, target = jnp.zeros((2, 3, 1)), jnp.array([[[1.0], [1.0], [9.0]], [[2.0], [9.0], [9.0]]])
    m = values.finalize({k: float(v) for k, v in values.sums(pred, {"y": target, "mask": mask}).items()})
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 1 + 4) / 3))


def test_regression_language_model_and_reconstruction_metrics() -> None:
    reg = build_objective(build_schema("regression", baseline="persistence"))
    batch = {"x": jnp.array([[[0.0], [1.0]], [[0.0], [2.0]]]), "y": jnp.array([[1.5], [2.0]])}
    m = reg.finalize({k: float(v) for k, v in reg.sums(jnp.array([[1.0], [3.0]]), batch).items()})
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 1.0) / 2)) and m["mae"] == pytest.approx(0.75)
    assert m["persistence_rmse"] == pytest.approx(math.sqrt(0.25 / 2))
    assert {x.direction for x in reg.metrics} == {"min"} and m["persistence_mae"] == pytest.approx(0.25)

    lm = build_objective(build_schema("language_model"))
    uniform = jnp.zeros((1, 5, 4))  # 4 equally likely tokens: 2 bits each, perplexity 4
    m = lm.finalize({k: float(v) for k, v in lm.sums(uniform, {"y": jnp.zeros((1, 5), jnp.int32)}).items()})
    assert m["bits_per_token"] == pytest.approx(2.0) and m["perplexity"] == pytest.approx(4.0)

    bce = build_objective(build_schema("reconstruction", loss="bce"))
    x = jnp.array([[[0.0], [1.0]]])
    m = bce.finalize({k: float(v) for k, v in bce.sums(jnp.array([[0.0, 0.0]]), {"x": x}).items()})
    assert m["mse"] == pytest.approx(0.25) and m["loss"] == pytest.approx(math.log(2.0), rel=1e-5)


def build_schema(name: str, **fields):
    from experiments.objectives import OBJECTIVES

    return OBJECTIVES.get(name).schema(name=name, **fields)


def test_best_metric_must_be_declared(tmp_path: Path) -> None:
    from experiments import hydra_bridge as hb
    from experiments.config import validate

    cfg, _ = hb.compose("timeseries_seed", ["trainer.best_metric=accuracy"])
    with pytest.raises(UserError, match="rmse, mae, loss, persistence_rmse"):
        validate(hb.task_config(cfg))


# ---------------------------------------------------------------------------- batches


def test_windows_are_cut_on_the_device_as_on_the_host() -> None:
    series = np.arange(50, dtype=np.float32)[:, None]
    w = Windows(series, length=6, stride=4)
    assert len(w) == (50 - 6) // 4
    arrays = {k: jnp.asarray(v) for k, v in w.device_arrays().items()}
    batch = w.gather(arrays, jnp.arange(len(w)))
    np.testing.assert_array_equal(batch["x"], w.sample(len(w))["x"])
    np.testing.assert_array_equal(batch["y"], w.sample(len(w))["y"])
    last = w.gather(arrays, jnp.array([len(w) - 1]), phase=3)  # the largest phase still fits
    assert float(last["y"][0, 0]) == (len(w) - 1) * 4 + 3 + 6 <= 49
    tokens = Windows(np.arange(20, dtype=np.int32), length=5, stride=5, target="shifted")
    b = tokens.gather({k: jnp.asarray(v) for k, v in tokens.device_arrays().items()}, jnp.array([1]), phase=2)
    assert b["x"].tolist() == [[7, 8, 9, 10, 11]] and b["y"].tolist() == [[8, 9, 10, 11, 12]]


def test_evaluation_pads_any_split_size_and_target_shape() -> None:
    from experiments.training.driver import Evaluator

    class Steps:
        objective = build_objective(build_schema("sequence", target="values"))

        def eval_step(self, state, batch):
            return self.objective.sums(batch["x"] * state, batch)

    x = np.random.default_rng(0).normal(size=(23, 3, 2)).astype(np.float32)
    y = np.zeros_like(x)
    m = Evaluator(Steps(), batch_size=5)(jnp.float32(1.0), Split(x, y))
    assert m["loss"] == pytest.approx(float(np.mean(x**2)), rel=1e-5)  # 23 = 4 full batches + 3, padding unseen


def test_augmentation_crops_and_flips_on_the_device() -> None:
    from experiments.data.augment import augment, check_augment

    x = jnp.arange(2 * 4 * 4, dtype=jnp.float32).reshape(2, 4, 4, 1) + 1
    out = augment([{"name": "random_crop", "padding": 1}], jax.random.key(0), x)
    assert out.shape == x.shape
    for i in range(2):  # each output is a 4x4 window of the zero-padded image
        padded = np.pad(np.asarray(x[i, :, :, 0]), 1)
        windows = [padded[r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        assert any(np.array_equal(np.asarray(out[i, :, :, 0]), w) for w in windows)
    flipped = augment([{"name": "flip_lr", "p": 1.0}], jax.random.key(0), x)
    np.testing.assert_array_equal(flipped, x[:, :, ::-1])
    with pytest.raises(UserError, match="unknown augmentation"):
        check_augment([{"name": "rotate"}])
    with pytest.raises(UserError, match="data.augment\\[0\\].pad"):
        check_augment([{"name": "random_crop", "pad": 4}])


def test_augmentation_runs_inside_the_training_step(nnrun_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "augmented"
    result = nnrun_cli("train", "conf=lenet5", *TINY, "trainer.epochs=1",
                       "data.augment=[{name: random_crop, padding: 2}]", f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.out
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and 0.1 < summary["test"]["accuracy"] <= 1.0


def test_tensorboard_writer_mirrors_the_metrics(nnrun_cli, tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX", reason="the optional tensorboard extra (pip install 'nnrun[tensorboard]')")
    run_dir = tmp_path / "tb"
    assert nnrun_cli("train", "conf=lenet5", *TINY, "trainer.epochs=1", "trainer.writers=[tensorboard]",
                     f"hydra.run.dir={run_dir}").code == 0
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboardX.proto import event_pb2  # read back what was written
    import struct

    data, tags = events[0].read_bytes(), set()
    while data:
        (length,) = struct.unpack("<Q", data[:8])
        event = event_pb2.Event.FromString(data[12:12 + length])
        tags |= {v.tag for v in event.summary.value}
        data = data[12 + length + 4:]
    assert {"train/loss", "train/accuracy", "val/accuracy", "val/top5_accuracy"} <= tags


def test_chunks_scan_except_xla_convolutions_on_cpu():
    """trainer.scan null: XLA-CPU compiles a convolution inside a scanned loop to plain loops
    (ResNet-20 23x slower, docs/results.md), so such models step one dispatch at a time there;
    an explicit trainer.scan wins."""
    from experiments.config import validate
    from experiments.hydra_bridge import compose, task_config
    from experiments.training.driver import scan_pays

    def exp(conf: str, *overrides: str):
        return validate(task_config(compose(conf, list(overrides))[0]))

    assert jax.default_backend() == "cpu"
    assert scan_pays(exp("mlp_mnist")) and scan_pays(exp("lenet5"))  # matmuls; LeNet5's CHWN patches
    assert not scan_pays(exp("lenet5", "model.layout=NHWC"))
    assert scan_pays(exp("lenet5", "model.layout=NHWC", "trainer.scan=true"))
    assert not scan_pays(exp("mlp_mnist", "trainer.scan=false"))
