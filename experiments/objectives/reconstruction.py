"""Reconstruction: the model maps an input back to itself (autoencoders).

`loss: mse` compares outputs with the inputs directly; `loss: bce` treats outputs as
logits of pixel intensities in [0, 1] (binary cross-entropy per value). Both report the
mean squared error of the reconstruction (after the sigmoid for bce), so runs with
either loss compare on one number. A variational model's outputs carry a KL term per
example: the loss is then the negative evidence lower bound (the reconstruction loss
summed over values plus `kl_weight` x KL), and `kl` is reported too.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from experiments.errors import UserError
from experiments.objectives import Metric, Objective, ObjectiveConfig, register_objective, weights


@dataclass
class ReconstructionConfig(ObjectiveConfig):
    name: str = "reconstruction"
    loss: str = "mse"  # mse | bce (inputs must lie in [0, 1])
    target: str = "x"  # the batch array to reconstruct (x; or a clean copy for denoising data)
    kl_weight: float = 1.0  # weight of a variational model's KL term (model.variational=true) in the loss


class Reconstruction(Objective):
    metrics = (Metric("mse", "min"), Metric("loss", "min"), Metric("kl", "min"))

    def __init__(self, loss: str = "mse", target: str = "x", kl_weight: float = 1.0):
        self.kind, self.target, self.kl_weight = loss, target, kl_weight

    def check(self, outputs_shape, batch_shapes):
        target = batch_shapes.get(self.target)
        if target is None:
            raise UserError(f"objective.target='{self.target}' is not in the data (it has {', '.join(batch_shapes)})")
        if int(jnp.prod(jnp.asarray(outputs_shape[1:]))) != int(jnp.prod(jnp.asarray(target[1:]))):
            raise UserError(f"the model's outputs {tuple(outputs_shape)} cannot reconstruct inputs {tuple(target)}; "
                            "its output size must equal the input size")

    def recon(self, outputs):
        """Outputs as reconstructions (probabilities for bce)."""
        outputs = getattr(outputs, "recon", outputs)  # a VAE's outputs carry their KL term beside
        return jax.nn.sigmoid(outputs) if self.kind == "bce" else outputs

    def sums(self, outputs, batch):
        kl = getattr(outputs, "kl", None)
        outputs = getattr(outputs, "recon", outputs)
        b = outputs.shape[0]
        out = outputs.reshape(b, -1)
        target = batch[self.target].reshape(b, -1).astype(out.dtype)
        w = weights(batch, (b,))
        sq = jnp.mean((self.recon(out) - target) ** 2, -1)
        # per pixel for mse; summed over pixels for bce, the variational bound's scale for a VAE
        per = jnp.mean if kl is None else jnp.sum
        loss = per(optax.sigmoid_binary_cross_entropy(out, target), -1) if self.kind == "bce" else per(
            (out - target) ** 2, -1)
        sums = {"sq": jnp.sum(sq * w), "weight": jnp.sum(w)}
        if kl is not None:  # the negative evidence lower bound (per example), KL weighted
            sums["kl"] = jnp.sum(kl * w)
            loss = loss + self.kl_weight * kl
        return {"loss": jnp.sum(loss * w), **sums}

    def finalize(self, s):
        n = max(s["weight"], 1e-12)
        return {"loss": s["loss"] / n, "mse": s["sq"] / n, **({"kl": s["kl"] / n} if "kl" in s else {})}


@register_objective("reconstruction", schema=ReconstructionConfig)
def build(cfg: ReconstructionConfig) -> Reconstruction:
    """reconstruct the input (autoencoders): MSE or binary cross-entropy"""
    if cfg.loss not in ("mse", "bce"):
        raise UserError(f"bad value for 'objective.loss': '{cfg.loss}'; allowed values: mse, bce")
    return Reconstruction(cfg.loss, cfg.target, cfg.kl_weight)
