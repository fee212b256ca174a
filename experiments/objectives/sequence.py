"""Per-time-step sequence prediction: a class or a value at every step of a sequence,
with a `mask` (batch, time) in the data for variable lengths; padded steps count nothing.

Outputs are (batch, time, classes) for `target: classes` and (batch, time, ...) for
`target: values`. Metrics are those of classification or regression, per valid step.
"""
from __future__ import annotations

from dataclasses import dataclass

from experiments.errors import UserError
from experiments.objectives import ObjectiveConfig, register_objective
from experiments.objectives.classification import Classification
from experiments.objectives.regression import Regression


@dataclass
class SequenceConfig(ObjectiveConfig):
    name: str = "sequence"
    target: str = "classes"  # classes (cross-entropy per step) | values (squared error per step)
    top_k: int = 0


class SequenceClassification(Classification):
    def check(self, outputs_shape, batch_shapes):
        if len(batch_shapes.get("y", ())) < 2:
            raise UserError("the sequence objective needs targets per time step, shape (batch, time); "
                            f"this dataset's targets have shape {batch_shapes.get('y')}")
        super().check(outputs_shape, batch_shapes)


@register_objective("sequence", schema=SequenceConfig)
def build(cfg: SequenceConfig):
    """a class or value at every time step, masked for variable lengths"""
    if cfg.target == "classes":
        return SequenceClassification(cfg.top_k)
    if cfg.target == "values":
        return Regression(per_step=True)
    raise UserError(f"bad value for 'objective.target': '{cfg.target}'; allowed values: classes, values")
