"""Per-time-step sequence prediction: a class or a value at every step of a sequence,
with a `mask` (batch, time) in the data for variable lengths; padded steps count nothing.

Outputs are (batch, time, classes) for `target: classes` and (batch, time, ...) for
`target: values`. Metrics are those of classification or regression, per valid step;
classes add `exact_match`: the fraction of sequences with every valid step right (a
translated date, a whole a^n b^n string's predictable symbols).

With `by: <key>` (an integer per example in the batch, e.g. the n of a^n b^n), classes
also report how exact match depends on it, for the values 1..`by_max`: `right_up_to`,
the largest v such that every example with a value <= v is exactly right (0 if the
smallest is wrong), and `largest_right`, the largest v of any exactly right example.
Counted as one sum per value, so they combine over batches like every other metric; in
evaluation only (the driver's evaluation batches carry `_valid`), not in training records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp

from experiments.errors import UserError
from experiments.objectives import Metric, ObjectiveConfig, register_objective, weights
from experiments.objectives.classification import Classification
from experiments.objectives.regression import Regression


@dataclass
class SequenceConfig(ObjectiveConfig):
    name: str = "sequence"
    target: str = "classes"  # classes (cross-entropy per step) | values (squared error per step)
    top_k: int = 0
    by: Optional[str] = None  # a batch key with an integer per example: exact match per value of it
    by_max: int = 512  # values 1..by_max are counted (larger ones only in exact_match)

    def __post_init__(self) -> None:
        if self.by is not None and self.by_max < 1:
            raise UserError(f"bad value for 'objective.by_max': {self.by_max}; it must be >= 1")


class SequenceClassification(Classification):
    def __init__(self, top_k: int = 0, by: Optional[str] = None, by_max: int = 512):
        super().__init__(top_k)
        self.by, self.by_max = by, by_max
        accuracy, *rest = self.metrics
        extra = (Metric("right_up_to", "max"), Metric("largest_right", "max")) if by else ()
        self.metrics = (accuracy, Metric("exact_match", "max"), *rest, *extra)

    def check(self, outputs_shape, batch_shapes):
        if len(batch_shapes.get("y", ())) < 2:
            raise UserError("the sequence objective needs targets per time step, shape (batch, time); "
                            f"this dataset's targets have shape {batch_shapes.get('y')}")
        if self.by and self.by not in batch_shapes:
            raise UserError(f"objective.by={self.by} names no entry of this dataset's batches "
                            f"({', '.join(sorted(batch_shapes))}); set objective.by=null or one of those")
        super().check(outputs_shape, batch_shapes)

    def sums(self, logits, batch):
        out = super().sums(logits, batch)
        y = batch["y"].astype(jnp.int32)
        counted = weights(batch, y.shape) > 0
        right = jnp.all((jnp.argmax(logits, -1) == y) | ~counted, axis=tuple(range(1, y.ndim)))
        example = batch["_valid"].astype(jnp.float32) if "_valid" in batch else jnp.ones(y.shape[:1], jnp.float32)
        out["exact"], out["examples"] = jnp.sum(right * example), jnp.sum(example)
        if self.by and "_valid" in batch:  # evaluation batches only: hundreds of sums a train step need not carry
            values = jnp.arange(1, self.by_max + 1)
            at = (batch[self.by].reshape(-1, 1) == values) * example[:, None]  # (batch, by_max)
            present, wrong = jnp.sum(at, 0), jnp.sum(at * ~right[:, None], 0)
            for i in range(self.by_max):
                out[f"by{i + 1}_n"], out[f"by{i + 1}_wrong"] = present[i], wrong[i]
        return out

    def finalize(self, s):
        out = super().finalize(s)
        out["exact_match"] = s["exact"] / max(s["examples"], 1e-12)
        if self.by and "by1_n" in s:
            seen = [v for v in range(1, self.by_max + 1) if s[f"by{v}_n"] > 0]
            right = [v for v in seen if s[f"by{v}_wrong"] == 0]
            first_wrong = next((v for v in seen if s[f"by{v}_wrong"] > 0), None)
            out["right_up_to"] = float(max([v for v in right if first_wrong is None or v < first_wrong], default=0))
            out["largest_right"] = float(max(right, default=0))
        return out


@register_objective("sequence", schema=SequenceConfig)
def build(cfg: SequenceConfig):
    """a class or value at every time step, masked for variable lengths; exact match per sequence"""
    if cfg.target == "classes":
        return SequenceClassification(cfg.top_k, cfg.by, cfg.by_max)
    if cfg.target == "values":
        return Regression(per_step=True)
    raise UserError(f"bad value for 'objective.target': '{cfg.target}'; allowed values: classes, values")
