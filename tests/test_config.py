"""Config schema: every experiment in conf/ composes and validates; overrides are checked
against the dataclass schemas with errors that name the key."""
from __future__ import annotations

import pytest
import re

from omegaconf import OmegaConf

from experiments import hydra_bridge as hb
from experiments.config import Experiment, experiment_names, validate
from experiments.optim import OptimConfig, ScheduleConfig
from experiments.errors import UserError
from experiments.models import MODELS
from experiments.training import TRAINERS

EXPERIMENTS = experiment_names()
REQUIRED_SUPERVISED_KEYS = ("seed", "trainer.epochs", "trainer.batch_size", "optim.name", "optim.lr", "data.name")


def composed(conf: str, *overrides: str):
    return hb.task_config(hb.compose(conf, list(overrides))[0])


def checked(conf: str, *overrides: str) -> Experiment:
    return validate(composed(conf, *overrides))


def test_the_three_shipped_experiments_are_found() -> None:
    assert {"lenet5", "lstm_mnist", "hopfield_letters"} <= set(EXPERIMENTS)
    assert not any(name.startswith("_") for name in EXPERIMENTS)  # _base is not an experiment


@pytest.mark.parametrize("conf", EXPERIMENTS)
def test_every_experiment_validates(conf: str) -> None:
    cfg = composed(conf)
    assert "hydra" not in cfg
    exp = validate(cfg)
    assert exp.model.name == cfg.model.name and exp.data.name == cfg.data.name
    assert MODELS.get(exp.model.name).trainer == exp.trainer.name
    assert exp.resume is None and isinstance(exp.seed, int)
    from experiments.training import TRAINERS

    entry = TRAINERS.get(exp.trainer.name)
    if entry.uses_optimizer:  # gradient, adversarial (optims["optim_d"]), contrastive divergence
        assert isinstance(exp.optim, OptimConfig) and isinstance(exp.schedule, ScheduleConfig)
        assert all(isinstance(exp.optims[g], OptimConfig) for g in entry.optim_groups)
    else:
        assert exp.optim is None and exp.schedule is None
    # the driver's trainers report through an objective; own procedures (hebbian) have none
    assert (exp.objective is not None) == (entry.steps is not None)


def test_gradient_experiments_have_the_common_keys() -> None:
    supervised = {conf: cfg for conf in EXPERIMENTS if (cfg := composed(conf)).trainer.name == "gradient"}
    assert {"lenet5", "lstm_mnist"} <= set(supervised)
    for conf, cfg in supervised.items():
        for key in REQUIRED_SUPERVISED_KEYS:
            assert OmegaConf.select(cfg, key) is not None, f"{conf}: {key}"


def test_experiment_values_override_group_defaults() -> None:
    exp = checked("lenet5")
    assert exp.optim.name == "adam" and exp.optim.lr == 0.002  # lenet5.yaml over optim/adam.yaml
    assert exp.trainer.epochs == 12 and exp.trainer.batch_size == 128
    assert checked("lstm_mnist").optim.clip_norm == 1.0


def test_overrides_are_typed() -> None:
    exp = checked("lenet5", "optim.lr=0.01", "trainer.epochs=3", "seed=7", "trainer.max_steps=5")
    assert (exp.optim.lr, exp.trainer.epochs, exp.seed, exp.trainer.max_steps) == (0.01, 3, 7, 5)
    assert isinstance(exp.trainer.epochs, int) and isinstance(exp.optim.lr, float)


def test_group_choice_swaps_the_whole_group() -> None:
    exp = checked("lenet5", "optim=momentum", "schedule=step")
    assert exp.optim.name == "momentum" and exp.optim.momentum == 0.9
    assert exp.schedule.name == "step" and exp.schedule.step_epochs == [5, 8]


@pytest.mark.parametrize("override, expected", [
    ("data.train_subset=100", 100),
    ("data.test_subset=50", 50),
    ("optim.eps=1e-6", 1e-6),  # in AdamConfig; conf/optim/adam.yaml names no key
    ("schedule.final_lr_frac=0.5", 0.5),
    ("trainer.max_steps=7", 7),
    ("objective.top_k=3", 3),
])
def test_schema_keys_missing_from_the_yaml_are_plain_overrides(override: str, expected) -> None:
    cfg, overrides = hb.compose("lenet5", [override])
    exp = validate(hb.task_config(cfg))
    group, key = override.split("=")[0].split(".")
    assert getattr(getattr(exp, group), key) == expected
    assert overrides == [override]  # no '+': the schema (ConfigStore) already holds the key


def test_every_schema_default_is_in_the_composed_config() -> None:
    """One source of defaults: the dataclass. The YAML adds nothing the schema lacks."""
    from dataclasses import fields

    from experiments.optim import OPTIMIZERS

    cfg = composed("lenet5", "optim=rmsprop")
    assert set(cfg.optim) == {f.name for f in fields(OPTIMIZERS.get("rmsprop").schema)}
    assert cfg.optim.decay == 0.9 and cfg.trainer.keep == 3 and cfg.objective.top_k == 5


def test_schema_key_of_another_group_choice_is_rejected() -> None:
    # `momentum` belongs to the momentum optimizer's schema, not adam's
    with pytest.raises(UserError, match=r"optim\.momentum"):
        checked("lenet5", "optim.momentum=0.5")
    # `trials` belongs to the hebbian trainer's schema, not the gradient one
    with pytest.raises(UserError, match=r"trainer\.trials"):
        checked("lenet5", "+trainer.trials=3")


@pytest.mark.parametrize("override, fragment", [
    ("trainer.epochs=abc", "trainer.epochs=abc"),
    ("objective.top_k=1.5", "objective.top_k=1.5"),
    ("trainer.best_metric=rmse", "rmse"),  # not declared by the classification objective
    ("objective=regression", "do not match the targets"),  # fails when shapes are checked, not here
])
def test_bad_values_fail_in_one_line(override: str, fragment: str) -> None:
    if fragment == "do not match the targets":
        checked("lenet5", override)  # valid config: the shape check comes before training (test_engine)
        return
    with pytest.raises(UserError, match=re.escape(fragment)) as info:
        checked("lenet5", override)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("conf, override, key", [
    ("lenet5", "trainer.epochz=3", "trainer.epochz"),
    ("lenet5", "data.bogus=1", "data.bogus"),
    ("lenet5", "bogus=1", "bogus"),
    ("lstm_mnist", "model.units=64", "model.units"),
    ("hopfield_letters", "optim.lr=0.1", "optim.lr"),  # no optimizer in a Hopfield experiment
    ("hopfield_letters", "schedule=cosine", "schedule"),
    ("hopfield_letters", "+schedule=cosine", "schedule.name"),
])
def test_unknown_override_key_names_the_key(conf: str, override: str, key: str) -> None:
    with pytest.raises(UserError, match=f"'{key}'"):
        checked(conf, override)


@pytest.mark.parametrize("override, key", [
    ("+trainer.epochz=3", "trainer.epochz"),
    ("+model.depth=3", "model.depth"),
    ("+foo=1", "foo"),
])
def test_unknown_key_added_with_plus_fails_validation(override: str, key: str) -> None:
    cfg = composed("lenet5", override)  # Hydra accepts a `+` addition ...
    with pytest.raises(UserError, match=f"'{key}'"):  # ... the schema does not
        validate(cfg)


@pytest.mark.parametrize("override, key", [
    ("trainer.epochs=many", "trainer.epochs"),
    ("trainer.batch_size=1.5", "trainer.batch_size"),
    ("optim.lr=fast", "optim.lr"),
    ("trainer.progress=maybe", "trainer.progress"),
    ("data.val_size=[1,2]", "data.val_size"),
    ("seed=abc", "seed"),
])
def test_wrong_type_names_the_key(override: str, key: str) -> None:
    with pytest.raises(UserError, match=f"'{key}'"):
        checked("lenet5", override)


@pytest.mark.parametrize("override, key", [
    ("optim.name=adafactor", "optim.name"),
    ("schedule.name=linear", "schedule.name"),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-0.1", "optim.lr"),
])
def test_bad_value_names_the_key(override: str, key: str) -> None:
    with pytest.raises(UserError, match=f"'{key}'"):
        checked("lenet5", override)


def test_bad_rnn_cell_is_caught_by_validation() -> None:
    assert checked("lstm_mnist", "model.cell=gru").model.cell == "gru"
    with pytest.raises(UserError, match="'model.cell'.*simple, lstm, gru"):
        checked("lstm_mnist", "model.cell=bogus")


def test_unknown_group_choice_lists_the_options() -> None:
    with pytest.raises(UserError, match=r"optim/adafactor.*adagrad, adam, adamw, momentum, rmsprop, sgd"):
        composed("lenet5", "optim=adafactor")


def test_model_trained_by_another_loop_is_rejected() -> None:
    with pytest.raises(UserError, match="set trainer=hebbian"):
        checked("lenet5", "model=hopfield", "data=letters")


def test_missing_required_group_is_rejected() -> None:
    with pytest.raises(UserError, match="'model'"):
        checked("lenet5", "~model")


def test_unknown_experiment_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"hopfield_letters, (\w+, )*lenet5, (\w+, )*lstm_mnist"):
        hb.compose("lenet6", [])


def test_validate_accepts_a_saved_run_config() -> None:
    """A run's config.yaml (resolved, no hydra node) validates to the same experiment."""
    cfg = composed("lenet5", "data.train_subset=100")
    saved = OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    assert validate(saved).data == validate(cfg).data
