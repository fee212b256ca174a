"""A radial basis function network: Gaussian units with centres and widths, a linear readout.

  phi_j(x) = exp(-|x - c_j|^2 / (2 s_j^2)),   y = W phi(x) + b

Centres start at k-means cluster centres (k-means++ seeding, then Lloyd iterations) of the training inputs (`init_from_data`, which
the gradient trainer calls with the training split), each width at the RMS distance from
its centre to its `width_neighbours` nearest other centres (the centres' spread); then
everything is trained end to end on the objective, or, with `fixed_centres: true`, only the
widths and the readout (the classic two-stage RBF network).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from experiments.errors import UserError
from experiments.models import DataInfo, ModelConfig, register_model


@dataclass
class RBFConfig(ModelConfig):
    name: str = "rbf"
    centres: int = 500  # Gaussian units
    fixed_centres: bool = False  # keep the k-means centres; train only widths and readout
    kmeans_iters: int = 20
    kmeans_sample: int = 20000  # training inputs the k-means runs on (the first N after a fixed shuffle)
    width_neighbours: int = 3  # a unit's width: RMS distance to this many nearest other centres
    width_scale: float = 1.0

    def __post_init__(self) -> None:
        for key in ("centres", "kmeans_iters", "kmeans_sample", "width_neighbours"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'model.{key}': {getattr(self, key)}; it must be >= 1")
        if self.width_scale <= 0:
            raise UserError(f"bad value for 'model.width_scale': {self.width_scale}; it must be > 0")


def kmeans_plus_plus(x: jnp.ndarray, k: int, key: jax.Array) -> jnp.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii 2007): each next centre is an input drawn
    with probability proportional to its squared distance to the nearest centre so far."""
    first = x[jax.random.randint(key, (), 0, len(x))]
    centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d2 = jnp.sum((x - first) ** 2, 1)

    def pick(i, carry):
        centres, d2 = carry
        c = x[jax.random.categorical(jax.random.fold_in(key, i), jnp.log(d2 + 1e-12))]
        return centres.at[i].set(c), jnp.minimum(d2, jnp.sum((x - c) ** 2, 1))

    return jax.lax.fori_loop(1, k, pick, (centres, d2))[0]


def kmeans(x: jnp.ndarray, k: int, iters: int, key: jax.Array) -> jnp.ndarray:
    """Lloyd's k-means from a k-means++ seeding; an empty cluster keeps its centre."""
    centres = kmeans_plus_plus(x, k, key)

    def step(c, _):
        d = jnp.sum(x ** 2, 1, keepdims=True) - 2 * x @ c.T + jnp.sum(c ** 2, 1)
        onehot = jax.nn.one_hot(jnp.argmin(d, 1), k, dtype=x.dtype)
        counts = onehot.sum(0)[:, None]
        return jnp.where(counts > 0, onehot.T @ x / jnp.maximum(counts, 1), c), None

    return jax.lax.scan(step, centres, None, length=iters)[0]


def spread_widths(centres: jnp.ndarray, neighbours: int) -> jnp.ndarray:
    """Each centre's RMS distance to its nearest `neighbours` other centres."""
    d = jnp.sum(centres ** 2, 1, keepdims=True) - 2 * centres @ centres.T + jnp.sum(centres ** 2, 1)
    d = jnp.maximum(d, 0) + jnp.diag(jnp.full(len(centres), jnp.inf))
    nearest = -jax.lax.top_k(-d, min(neighbours, len(centres) - 1))[0]
    return jnp.sqrt(jnp.mean(nearest, 1) + 1e-12)


class GaussianUnits(nn.Module):
    """phi_j(x) = exp(-|x - c_j|^2 / (2 s_j^2)) for flat inputs x; widths as log s_j."""

    units: int
    fixed_centres: bool = False
    layer_type = "Gaussian"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = self.param("centres", nn.initializers.normal(1.0), (self.units, x.shape[1]))
        log_width = self.param("log_width", nn.initializers.zeros, (self.units,))
        if self.fixed_centres:
            c = jax.lax.stop_gradient(c)
        d = jnp.sum(x ** 2, 1, keepdims=True) - 2 * x @ c.T + jnp.sum(c ** 2, 1)
        return jnp.exp(-jnp.maximum(d, 0) / (2 * jnp.exp(2 * log_width)))


class RBFNetwork(nn.Module):
    centres: int
    outputs: int
    fixed_centres: bool = False
    kmeans_iters: int = 20
    kmeans_sample: int = 20000
    width_neighbours: int = 3
    width_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        phi = GaussianUnits(self.centres, self.fixed_centres, name="RBF")(x.reshape(x.shape[0], -1))
        return nn.Dense(self.outputs, name="Readout")(phi)

    def init_from_data(self, train) -> dict:
        """The centres by k-means on training inputs, the widths from their spread."""
        x = np.asarray(train.x).reshape(len(train), -1)
        if len(x) < self.centres:
            raise UserError(f"model.centres={self.centres} is more than the {len(x)} training examples; "
                            "use fewer centres")
        key = jax.random.key(0)
        take = np.asarray(jax.random.permutation(key, len(x)))[: min(self.kmeans_sample, len(x))]
        centres = jax.jit(kmeans, static_argnums=(1, 2))(jnp.asarray(x[take]), self.centres, self.kmeans_iters,
                                                         jax.random.fold_in(key, 1))
        widths = self.width_scale * spread_widths(centres, self.width_neighbours)
        return {"RBF": {"centres": centres, "log_width": jnp.log(widths)}}

    def figures(self, state, data, out_dir) -> list:
        """plots/centres.png: the trained centres as images (the first 100), in data units."""
        from experiments.training.adversarial import save_grid

        shape = tuple(data.train.x.shape[1:])
        if len(shape) != 3:
            return []
        c = np.asarray(state.params["RBF"]["centres"])[:100].reshape((-1, *shape))
        lo, hi = np.percentile(c, 1), np.percentile(c, 99)
        return [save_grid(np.clip((c - lo) / (hi - lo + 1e-12), 0, 1), out_dir / "centres.png")]


@register_model("rbf", schema=RBFConfig,
                description="RBF network: Gaussian units (k-means centres, spread widths), linear readout")
def build(cfg: RBFConfig, info: DataInfo) -> RBFNetwork:
    outputs = info.num_classes or info.output_size
    return RBFNetwork(cfg.centres, outputs, cfg.fixed_centres, cfg.kmeans_iters, cfg.kmeans_sample,
                      cfg.width_neighbours, cfg.width_scale)
