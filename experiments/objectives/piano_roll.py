"""Polyphonic next-step prediction on piano rolls: an independent sigmoid per key.

Outputs are logits (batch, time, keys); targets `y` the 0/1 rows of the next steps; a
`mask` (batch, time) marks the real steps of variable-length pieces. The loss is the
negative log-likelihood of a step, the sum over keys of the binary cross-entropy, averaged
over the real steps: `nll_per_step`, in nats, the number Chung et al. 2014 report for JSB
Chorales (their Table 2). `frame_accuracy` is the fraction of steps whose every key is
predicted right at p > 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import optax

from experiments.errors import UserError
from experiments.objectives import Metric, Objective, ObjectiveConfig, register_objective, weights


@dataclass
class PianoRollConfig(ObjectiveConfig):
    name: str = "piano_roll"


class PianoRoll(Objective):
    metrics = (Metric("nll_per_step", "min"), Metric("frame_accuracy", "max"), Metric("loss", "min"))

    def check(self, outputs_shape, batch_shapes):
        y = batch_shapes.get("y")
        if y is None or len(y) != 3 or tuple(outputs_shape) != tuple(y):
            raise UserError(f"the piano_roll objective wants logits (batch, time, keys) for targets of that shape; "
                            f"got outputs {tuple(outputs_shape)} for targets {y}")

    def sums(self, logits, batch):
        y = batch["y"].astype(jnp.float32)
        nll = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, y), axis=-1)  # (B, T): nats per step
        w = weights(batch, nll.shape)
        exact = jnp.all((logits > 0) == (y > 0.5), axis=-1)
        return {"loss": jnp.sum(nll * w), "exact": jnp.sum(exact * w), "weight": jnp.sum(w)}

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        return {"loss": s["loss"] / n, "nll_per_step": s["loss"] / n, "frame_accuracy": s["exact"] / n}


@register_objective("piano_roll", schema=PianoRollConfig)
def build(cfg: PianoRollConfig) -> PianoRoll:
    """per-key sigmoid next-step prediction; NLL per time step (sum of key BCEs), masked"""
    return PianoRoll()
