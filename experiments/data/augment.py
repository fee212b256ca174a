"""On-device augmentation ops, declared in the data config and applied to training
batches inside the jitted step (`data.augment: [{name: random_crop, padding: 4}, {name: flip_lr}]`).

Each op is a pure function `(key, x, **params) -> x` over a batch of inputs laid out as
(batch, height, width, channels) for images. Evaluation batches are never augmented.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from experiments.errors import UserError

AUGMENTATIONS: dict[str, Callable[..., jax.Array]] = {}


def register_augmentation(name: str):
    def decorator(fn):
        AUGMENTATIONS[name] = fn
        return fn

    return decorator


@register_augmentation("random_crop")
def random_crop(key: jax.Array, x: jax.Array, padding: int = 4) -> jax.Array:
    """Pad height and width with zeros by `padding`, then crop each image back at a random offset."""
    _images_only("random_crop", x)
    b, h, w = x.shape[:3]
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding)) + ((0, 0),) * (x.ndim - 3))
    dy, dx = jax.random.randint(key, (2, b), 0, 2 * padding + 1)
    crop = lambda img, y0, x0: jax.lax.dynamic_slice(img, (y0, x0) + (0,) * (x.ndim - 3), (h, w) + x.shape[3:])  # noqa: E731
    return jax.vmap(crop)(padded, dy, dx)


@register_augmentation("flip_lr")
def flip_lr(key: jax.Array, x: jax.Array, p: float = 0.5) -> jax.Array:
    """Mirror each image left-right with probability `p`."""
    _images_only("flip_lr", x)
    flip = jax.random.bernoulli(key, p, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(flip, x[:, :, ::-1], x)


@register_augmentation("gaussian_noise")
def gaussian_noise(key: jax.Array, x: jax.Array, std: float = 0.1) -> jax.Array:
    """Add N(0, std^2) noise to every input value (denoising autoencoders, robustness)."""
    return x + std * jax.random.normal(key, x.shape, x.dtype)


def _images_only(name: str, x: jax.Array) -> None:
    if x.ndim < 3:
        raise UserError(f"data.augment op '{name}' needs image batches (batch, height, width[, channels]); "
                        f"this dataset's inputs have shape {tuple(x.shape[1:])}; drop the op")


def check_augment(ops: list[dict[str, Any]]) -> None:
    """Validate `data.augment` before any work: known names, known parameters."""
    for i, op in enumerate(ops):
        name = op.get("name")
        if name not in AUGMENTATIONS:
            raise UserError(f"unknown augmentation 'data.augment[{i}].name={name}'; known: {', '.join(sorted(AUGMENTATIONS))}")
        allowed = [p for p in inspect.signature(AUGMENTATIONS[name]).parameters if p not in ("key", "x")]
        for param in op:
            if param != "name" and param not in allowed:
                raise UserError(f"unknown parameter 'data.augment[{i}].{param}' for '{name}'; allowed: {', '.join(allowed)}")


def augment(ops: list[dict[str, Any]], key: jax.Array, x: jax.Array) -> jax.Array:
    """Apply the declared ops in order, each with its own key."""
    for i, op in enumerate(ops):
        params = {k: v for k, v in op.items() if k != "name"}
        x = AUGMENTATIONS[op["name"]](jax.random.fold_in(key, i), x, **params)
    return x
