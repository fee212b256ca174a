"""Models: a registry of builders. Adding a model = one module here + one YAML in conf/model/.

A builder takes the model's validated config and facts about the data (input shape and
dtype, target shape, number of classes) and returns the model object its trainer
expects: a Flax module for gradient-trained models, a plain pure-function bundle for
energy models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from experiments.registry import Registry


@dataclass
class ModelConfig:
    """Fields every model config has; models extend this dataclass."""

    name: str = "lenet5"


@dataclass(frozen=True)
class DataInfo:
    input_shape: tuple[int, ...]
    num_classes: Optional[int] = None  # None for data without classes
    input_dtype: str = "float32"
    target_shape: tuple[int, ...] = ()  # one example's target `y` (() for a label or a scalar)
    background: Union[float, tuple[float, ...]] = 0.0  # the input value of a blank pixel (a raw 0 after normalisation): a float, or one per channel

    @property
    def output_size(self) -> int:
        """Values a model predicts per example when its outputs are the target's shape."""
        size = 1
        for d in self.target_shape:
            size *= d
        return size


@dataclass(frozen=True)
class ModelEntry:
    schema: type
    build: Callable[[Any, DataInfo], Any]
    trainer: str  # the trainer that trains it: "gradient" or "hebbian"
    description: str
    input_shape: Optional[str] = None  # what inputs it takes, e.g. "(N, 28, 28, 1)": named when data does not fit


MODELS: Registry[ModelEntry] = Registry("model", __name__)


def register_model(name: str, schema: type, trainer: str = "gradient", description: str = "",
                   input_shape: Optional[str] = None):
    """Decorator for a builder `(cfg, DataInfo) -> model`. `input_shape` (optional) says
    what inputs the model takes, for the error when a dataset's do not fit."""

    def decorator(build: Callable[[Any, DataInfo], Any]):
        MODELS.register(name)(ModelEntry(schema, build, trainer, description or (build.__doc__ or "").strip(),
                                         input_shape))
        return build

    return decorator


def build_model(cfg: Any, info: DataInfo) -> Any:
    return MODELS.get(cfg.name).build(cfg, info)


def data_info(dataset: Any) -> DataInfo:
    """What a builder may know about a dataset, read from a real batch."""
    sample = dataset.train.sample(1)
    y = sample.get("y")
    background = dataset.meta.get("background", 0.0)
    return DataInfo(tuple(sample["x"].shape[1:]), dataset.num_classes, str(sample["x"].dtype),
                    tuple(y.shape[1:]) if y is not None else (),
                    tuple(background) if isinstance(background, (list, tuple)) else float(background))
