"""Models: a registry of builders. Adding a model = one module here + one YAML in conf/model/.

A builder takes the model's validated config and facts about the data (input shape,
number of classes) and returns the model object its training loop expects: a Flax
module for gradient-trained models, a plain pure-function bundle for energy models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from experiments.registry import Registry


@dataclass
class ModelConfig:
    """Fields every model config has; models extend this dataclass."""

    name: str = "lenet5"


@dataclass(frozen=True)
class DataInfo:
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class ModelEntry:
    schema: type
    build: Callable[[Any, DataInfo], Any]
    family: str  # which training loop drives it: "supervised" or "hopfield"
    description: str


MODELS: Registry[ModelEntry] = Registry("model", __name__)


def register_model(name: str, schema: type, family: str = "supervised", description: str = ""):
    """Decorator for a builder `(cfg, DataInfo) -> model`."""

    def decorator(build: Callable[[Any, DataInfo], Any]):
        MODELS.register(name)(ModelEntry(schema, build, family, description or (build.__doc__ or "").strip()))
        return build

    return decorator


def build_model(cfg: Any, info: DataInfo) -> Any:
    return MODELS.get(cfg.name).build(cfg, info)
