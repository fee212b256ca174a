"""Next-token language modelling: cross-entropy per token; bits per token (bits per
character for character models) and perplexity.

Inputs are integer tokens (batch, time); targets `y` are the same window shifted by one.
With `objective.baselines=true` the data must also carry `unigram_nll` and `bigram_nll`
per target token (the `text` dataset's `data.baselines=true`): their perplexities are
reported beside the model's, on the same tokens.
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
    baselines: bool = False  # also report unigram and bigram perplexity (data.baselines=true)


BASELINES = ("unigram", "bigram")


class LanguageModel(Objective):
    def __init__(self, baselines: bool = False):
        self.baselines = baselines
        extra = tuple(Metric(f"{b}_perplexity", "min") for b in BASELINES) if baselines else ()
        self.metrics = (Metric("bits_per_token", "min"), Metric("perplexity", "min"), Metric("loss", "min"), *extra)

    def check(self, outputs_shape, batch_shapes):
        y = batch_shapes.get("y")
        if y is None or len(y) != 2 or tuple(outputs_shape[:-1]) != tuple(y):
            raise UserError(f"language modelling wants logits (batch, time, vocab) for targets (batch, time); "
                            f"got outputs {tuple(outputs_shape)} for targets {y}")
        missing = [f"{b}_nll" for b in BASELINES if f"{b}_nll" not in batch_shapes] if self.baselines else []
        if missing:
            raise UserError(f"objective.baselines=true needs {' and '.join(missing)} in the data; "
                            "set data.baselines=true (text dataset) or objective.baselines=false")

    def sums(self, logits, batch):
        y = batch["y"].astype(jnp.int32)
        w = weights(batch, y.shape)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        out = {"loss": jnp.sum(nll * w), "weight": jnp.sum(w)}
        if self.baselines:
            for b in BASELINES:
                out[f"{b}_nll"] = jnp.sum(batch[f"{b}_nll"] * w)
        return out

    def finalize(self, s):
        nats = s["loss"] / max(s["weight"], 1e-12)
        out = {"loss": nats, "bits_per_token": nats / math.log(2), "perplexity": math.exp(min(nats, 700.0))}
        for b in BASELINES if self.baselines else ():
            out[f"{b}_perplexity"] = math.exp(min(s[f"{b}_nll"] / max(s["weight"], 1e-12), 700.0))
        return out


@register_objective("language_model", schema=LanguageModelConfig)
def build(cfg: LanguageModelConfig) -> LanguageModel:
    """next-token cross-entropy; bits per token, perplexity (and unigram/bigram baselines' perplexity)"""
    return LanguageModel(cfg.baselines)
