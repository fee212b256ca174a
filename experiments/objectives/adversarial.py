"""Adversarial: the metrics of a two-player game (GANs, trainer=adversarial).

The adversarial trainer computes the losses itself (it needs both players); this
objective only declares what is reported and turns the sums into means:
- g_loss: the generator's non-saturating loss, -log D(G(z));
- d_loss: the discriminator's loss, -log D(x) - log(1 - D(G(z)));
- d_real, d_fake: the mean probabilities D(x) and D(G(z)) (0.5 each at equilibrium);
- fid: the Frechet distance of samples to real images in a classifier's feature space,
  reported at each epoch end when `trainer.classifier` names a classifier run (lower is
  better; `trainer.best_metric=fid` picks the best checkpoint by it).
"""
from __future__ import annotations

from dataclasses import dataclass

from experiments.objectives import Metric, Objective, ObjectiveConfig, register_objective

SUMMED = ("g_loss", "d_loss", "d_real", "d_fake")


@dataclass
class AdversarialConfig(ObjectiveConfig):
    name: str = "adversarial"


class Adversarial(Objective):
    metrics = (Metric("g_loss", "min"), Metric("d_loss", "min"), Metric("d_real", "max"), Metric("d_fake", "max"),
               Metric("fid", "min"), Metric("loss", "min"))

    def sums(self, outputs, batch):
        raise NotImplementedError("the adversarial trainer computes its own sums (training/adversarial.py)")

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        return {"loss": s["loss"] / n, **{k: s[k] / n for k in SUMMED if k in s}}


@register_objective("adversarial", schema=AdversarialConfig)
def build(cfg: AdversarialConfig) -> Adversarial:
    """a two-player game (GANs): generator and discriminator losses, D(x), D(G(z)), Frechet distance"""
    return Adversarial()
