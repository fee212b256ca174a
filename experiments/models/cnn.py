"""`model=cnn`: a convolutional network described in YAML, layer by layer; no Python needed.

    model:
      layers:
        - {type: conv, filters: 32, kernel: 3, padding: same, activation: relu}
        - {type: pool, kind: max, window: 2}          # kind: max | avg | min; stride defaults to window
        - {type: batchnorm}
        - {type: dropout, rate: 0.25}
        - {type: flatten}                             # or {type: global_pool, kind: avg}
        - {type: dense, units: 128, activation: relu}

The classifier's output layer (one unit per class) is added after the list. Layer types and
their keys are checked when the config is read; shapes are checked against the data's input
shape before the model is built, so a layer that cannot fit (a pool bigger than its input, a
dense layer before flatten) fails with one line naming the layer's index and the shapes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import jax.numpy as jnp
from flax import linen as nn

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import (ACTIVATIONS, POOLS, Activation, BatchNorm, Conv, Dense, Dropout, Flatten,
                                       GlobalPool, Pool)

# type -> {key: default}; `...` marks a required key
LAYER_KEYS: dict[str, dict[str, Any]] = {
    "conv": {"filters": ..., "kernel": 3, "stride": 1, "padding": "same", "activation": "none", "groups": 1,
             "bias": True},
    "pool": {"kind": "max", "window": 2, "stride": None, "padding": "valid"},
    "global_pool": {"kind": "avg"},
    "activation": {"fn": ...},
    "dropout": {"rate": 0.5},
    "batchnorm": {"momentum": 0.9, "epsilon": 1e-5},
    "flatten": {},
    "dense": {"units": ..., "activation": "none"},
}


@dataclass
class CNNConfig(ModelConfig):
    name: str = "cnn"
    # the layers in order, each a dict with `type` and that type's keys (module docstring)
    layers: list[dict[str, Any]] = field(default_factory=lambda: [
        {"type": "conv", "filters": 32, "kernel": 3, "activation": "relu"},
        {"type": "pool", "kind": "max", "window": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 128, "activation": "relu"},
    ])

    def __post_init__(self) -> None:
        self.layers = [normalise_layer(i, dict(spec)) for i, spec in enumerate(self.layers)]


def normalise_layer(index: int, spec: dict[str, Any]) -> dict[str, Any]:
    """The layer's spec with every key of its type filled in; one-line errors for unknown
    types, unknown or missing keys and bad values."""
    where = f"model.layers[{index}]"
    kind = spec.pop("type", None)
    if kind not in LAYER_KEYS:
        raise UserError(f"{where}: unknown layer type {kind!r}; use one of {', '.join(LAYER_KEYS)}")
    keys = LAYER_KEYS[kind]
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise UserError(f"{where} ({kind}): unknown key(s) {', '.join(unknown)}; "
                        f"its keys are {', '.join(keys) or '(none)'}")
    missing = [k for k, v in keys.items() if v is ... and k not in spec]
    if missing:
        raise UserError(f"{where} ({kind}): missing {', '.join(missing)}, e.g. "
                        f"{{type: {kind}, {missing[0]}: {'relu' if missing[0] == 'fn' else 64}}}")
    out = {"type": kind, **{k: spec.get(k, v) for k, v in keys.items()}}
    for key in ("activation", "fn"):
        if key in out and out[key] not in ACTIVATIONS:
            raise UserError(f"{where} ({kind}): unknown activation {out[key]!r}; use one of {', '.join(ACTIVATIONS)}")
    if kind in ("pool", "global_pool") and out["kind"] not in (POOLS if kind == "pool" else ("avg", "max")):
        raise UserError(f"{where} ({kind}): unknown kind {out['kind']!r}; use one of "
                        f"{', '.join(POOLS if kind == 'pool' else ('avg', 'max'))}")
    for key in ("filters", "units", "kernel", "window", "stride", "groups"):
        if key in out and out[key] is not None and (not isinstance(out[key], int) or out[key] < 1):
            raise UserError(f"{where} ({kind}): {key} must be a positive integer, got {out[key]!r}")
    if "padding" in out:
        p = out["padding"]
        if not (isinstance(p, int) and p >= 0) and str(p).lower() not in ("same", "valid"):
            raise UserError(f"{where} ({kind}): padding must be same, valid or a number of pixels, got {p!r}")
    if kind == "dropout" and not 0 <= out["rate"] < 1:
        raise UserError(f"{where} (dropout): rate must be in [0, 1), got {out['rate']!r}")
    return out


# ---------------------------------------------------------------------------- shapes


def _spatial(size: int, kernel: int, stride: int, padding: str | int) -> int:
    if isinstance(padding, int):
        return (size + 2 * padding - kernel) // stride + 1
    if str(padding).lower() == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def check_shapes(layers: list[dict[str, Any]], input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each layer's output shape (per example) for `input_shape`; a one-line error at the
    first layer that cannot take its input."""
    shape = tuple(input_shape)
    if len(shape) == 2:  # grayscale images without a channel axis
        shape = (*shape, 1)
    shapes = []
    for i, spec in enumerate(layers):
        kind, where = spec["type"], f"model.layers[{i}] ({spec['type']})"
        image = len(shape) == 3
        if kind in ("conv", "pool", "global_pool") and not image:
            raise UserError(f"{where} needs images (height, width, channels) but gets {_fmt(shape)}; "
                            "put it before the flatten/dense layers")
        if kind in ("conv", "pool"):
            k = spec["kernel"] if kind == "conv" else spec["window"]
            s = spec["stride"] or (1 if kind == "conv" else k)
            pad = spec["padding"]
            if (isinstance(pad, int) or str(pad).lower() == "valid") and any(
                    d + 2 * (pad if isinstance(pad, int) else 0) < k for d in shape[:2]):
                raise UserError(f"{where}: its {k}x{k} window is bigger than its input {_fmt(shape)}; use a smaller "
                                "window, padding: same, or fewer layers that shrink the image before it")
            channels = spec["filters"] if kind == "conv" else shape[2]
            if kind == "conv" and (shape[2] % spec["groups"] or channels % spec["groups"]):
                raise UserError(f"{where}: groups={spec['groups']} must divide its input channels {shape[2]} "
                                f"and its filters {channels}")
            shape = (_spatial(shape[0], k, s, pad), _spatial(shape[1], k, s, pad), channels)
        elif kind == "global_pool":
            shape = (shape[2],)
        elif kind == "flatten":
            shape = (math.prod(shape),)
        elif kind == "dense":
            if len(shape) != 1:
                raise UserError(f"{where}: a dense layer needs a flat input but gets {_fmt(shape)}; "
                                "add {type: flatten} (or {type: global_pool}) before it")
            shape = (spec["units"],)
        shapes.append(shape)
    if len(shape) != 1:
        raise UserError(f"model.layers: the last layer's output is {_fmt(shape)}, but the output layer needs a flat "
                        "input; end the list with {type: flatten} or {type: global_pool}")
    return shapes


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# ---------------------------------------------------------------------------- the model

BUILDERS: dict[str, Callable[[dict, str], nn.Module]] = {
    "conv": lambda s, n: Conv(s["filters"], s["kernel"], s["stride"], s["padding"], s["activation"], s["groups"],
                              s["bias"], name=n),
    "pool": lambda s, n: Pool(s["kind"], s["window"], s["stride"], str(s["padding"]).upper(), name=n),
    "global_pool": lambda s, n: GlobalPool(s["kind"], name=n),
    "activation": lambda s, n: Activation(s["fn"], name=n),
    "dropout": lambda s, n: Dropout(s["rate"], name=n),
    "batchnorm": lambda s, n: BatchNorm(s["momentum"], s["epsilon"], name=n),
    "flatten": lambda s, n: Flatten(name=n),
    "dense": lambda s, n: Dense(s["units"], s["activation"], name=n),
}
TRAIN_AWARE = ("dropout", "batchnorm")  # layers that behave differently in training


class CNN(nn.Module):
    layers: tuple[dict[str, Any], ...]
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.ndim == 3:
            x = x[..., None]
        for i, spec in enumerate(self.layers):
            layer = BUILDERS[spec["type"]](spec, f"{spec['type']}{i}")
            x = layer(x, train) if spec["type"] in TRAIN_AWARE else layer(x)
        return Dense(self.num_classes, name="out")(x)


@register_model("cnn", schema=CNNConfig, description="a CNN described layer by layer in YAML (model.layers)",
                input_shape="(N, H, W, C) images")
def build(cfg: CNNConfig, info: DataInfo) -> CNN:
    if len(info.input_shape) not in (2, 3):
        raise UserError(f"model=cnn needs images (N, H, W[, C]); this dataset's inputs are "
                        f"{_fmt(info.input_shape)} per example")
    check_shapes(cfg.layers, info.input_shape)
    return CNN(tuple(cfg.layers), info.num_classes or 10)
