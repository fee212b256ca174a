"""Next-token language modelling: cross-entropy per token; bits per token (bits per
character for character models) and perplexity.

Inputs are integer tokens (batch, time); targets `y` are the same window shifted by one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import optax

from experiments.errors import UserError
from experiments.objectives import Metric, Objective, ObjectiveConfig, register_objective, weights


@dataclass
class LanguageModelConfig(ObjectiveConfig):
    name: str = "language_model"


class LanguageModel(Objective):
    metrics = (Metric("bits_per_token", "min"), Metric("perplexity", "min"), Metric("loss", "min"))

    def check(self, outputs_shape, batch_shapes):
        y = batch_shapes.get("y")
        if y is None or len(y) != 2 or tuple(outputs_shape[:-1]) != tuple(y):
            raise UserError(f"language modelling wants logits (batch, time, vocab) for targets (batch, time); "
                            f"got outputs {tuple(outputs_shape)} for targets {y}")

    def sums(self, logits, batch):
        y = batch["y"].astype(jnp.int32)
        w = weights(batch, y.shape)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return {"loss": jnp.sum(nll * w), "weight": jnp.sum(w)}

    def finalize(self, s):
        nats = s["loss"] / max(s["weight"], 1e-12)
        return {"loss": nats, "bits_per_token": nats / math.log(2), "perplexity": math.exp(min(nats, 700.0))}


@register_objective("language_model", schema=LanguageModelConfig)
def build(cfg: LanguageModelConfig) -> LanguageModel:
    """next-token cross-entropy; bits per token, perplexity"""
    return LanguageModel()
