"""The adversarial trainer: a generator and a discriminator, two optimizers (GANs).

`trainer=adversarial` with a model that has both players (models/dcgan.py): the
generator's parameters follow `optim` (and `schedule`), the discriminator's `optim_d`
(`optim_d=adam optim_d.lr=2e-4`). Each step draws z from the step's `latent` stream,
updates the discriminator on real and generated images, then the generator with the
non-saturating loss -log D(G(z)) against the updated discriminator. The driver runs it
like any other trainer: chunks, epochs, checkpoints (both players and both optimizer
states, and the fixed latent batch), resume, vectorised sweeps.

At each epoch end (`end_epoch`) the samples of the fixed latent batch, drawn once at
initialisation, are saved as plots/samples/epoch_<NNN>.png; with `trainer.classifier`
(a classifier run directory) the Frechet distance of `trainer.fid_samples` samples to the
validation images is added to the epoch's record. `nnrun eval` on a GAN run
(`evaluate`) draws `trainer.eval_samples` samples and scores them with that classifier,
beside the real test images (experiments/gan_scores.py).

Images: the data's pixels (either normalisation, read from the dataset's metadata) are
mapped to [-1, 1], the range of the generator's tanh.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from experiments.config import Experiment
from experiments.data import Dataset
from experiments.errors import UserError
from experiments.figures import figure
from experiments.models import build_model, data_info
from experiments.objectives import build_objective
from experiments.optim import make_schedule, make_transform, traced_fields, STRUCTURAL_FIELDS
from experiments.training import Streams, TrainerConfig, TrainerEntry, register_trainer

log = logging.getLogger("nnrun")

EVAL_KEY = 7  # fold-in constants of the fixed keys: validation latents, per-epoch FID latents, eval latents
FID_KEY = 8
SAMPLE_KEY = 9


@dataclass
class AdversarialTrainerConfig(TrainerConfig):
    name: str = "adversarial"
    batch_size: int = 64
    classifier: Optional[str] = None  # a classifier run directory (e.g. outputs/lenet5/<run>) that judges samples
    feature_layer: str = "F6"  # the classifier's layer whose activations the Frechet distance compares
    fid_samples: int = 2000  # samples scored at each epoch end when a classifier is set (0 = off)
    eval_samples: int = 10000  # samples `nnrun eval` draws and scores
    grid: int = 8  # the fixed latent batch is grid x grid samples, drawn once
    # Decay of an exponential moving average of the generator's parameters (0 = off). With it,
    # sample grids, the per-epoch FID and `nnrun eval` draw from the average, which smooths the
    # step-to-step wobble of the adversarial game (Yazici et al. 2019); training is unchanged.
    ema: float = 0.0
    # Weight gamma of the R1 penalty (Mescheder et al. 2018): gamma/2 * E ||grad_x D(x)||^2 on
    # real images, added to the discriminator's loss and its d_loss metric (0 = off). It keeps
    # the discriminator from sharp, oscillating decision surfaces around the data.
    r1: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("eval_samples", "grid"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'trainer.{key}': {getattr(self, key)}; it must be >= 1")
        if not 0.0 <= self.ema < 1.0:
            raise UserError(f"bad value for 'trainer.ema': {self.ema}; it must be in [0, 1), e.g. 0.999 (0 = off)")
        if self.r1 < 0.0:
            raise UserError(f"bad value for 'trainer.r1': {self.r1}; it must be >= 0, e.g. 1.0 (0 = off)")
        if self.fid_samples < 0 or self.fid_samples == 1:
            raise UserError(f"bad value for 'trainer.fid_samples': {self.fid_samples}; it must be 0 (off) or >= 2")
        if self.classifier and not Path(self.classifier).expanduser().is_dir():
            raise UserError(f"bad value for 'trainer.classifier': {self.classifier} does not exist; give a classifier "
                            "run directory, e.g. outputs/lenet5/<run> from `nnrun train conf=lenet5`, or null")


class GANState(struct.PyTreeNode):
    g_params: Any
    d_params: Any
    g_opt_state: Any
    d_opt_state: Any
    fixed_z: jax.Array  # the latent batch of the sample grids, drawn once
    g_ema: Any = None  # the generator's moving average (trainer.ema > 0); None keeps older checkpoints' tree

    @property
    def sampler_params(self):
        """The generator parameters samples are drawn from: the average when there is one."""
        return self.g_params if self.g_ema is None else self.g_ema


@dataclass(frozen=True)
class PixelMap:
    """Data pixels <-> the generator's [-1, 1]; the data's (mean, std) normalisation undone."""

    mean: float
    std: float

    def to_gan(self, x):
        return 2.0 * (x * self.std + self.mean) - 1.0

    @staticmethod
    def to_unit(images):
        return (images + 1.0) / 2.0


def _bce_real(logits):  # -log sigmoid(l)
    return jax.nn.softplus(-logits)


def _bce_fake(logits):  # -log(1 - sigmoid(l))
    return jax.nn.softplus(logits)


@dataclass
class AdversarialSteps:
    model: Any
    tx_g: optax.GradientTransformation
    tx_d: optax.GradientTransformation
    objective: Any
    pixels: PixelMap
    cfg: Any  # the trainer config
    seed: int = 0
    schedule: Optional[optax.Schedule] = None
    data: Optional[Dataset] = None

    # ---- the players
    def generate(self, g_params, z):
        return self.model.apply({"params": {"generator": g_params}}, z, method="generate")

    def discriminate(self, d_params, x):
        return self.model.apply({"params": {"discriminator": d_params}}, x, method="discriminate")

    # ---- the Steps protocol
    def init(self, key: jax.Array, batch: dict) -> GANState:
        k_params, k_z = jax.random.split(key)
        params = self.model.init(k_params, jnp.asarray(batch["x"]))["params"]
        g, d = params["generator"], params["discriminator"]
        fixed_z = jax.random.normal(k_z, (self.cfg.grid ** 2, self.model.latent))
        g_ema = jax.tree.map(jnp.copy, g) if self.cfg.ema else None
        return GANState(g, d, self.tx_g.init(g), self.tx_d.init(d), fixed_z, g_ema)

    def train_step(self, state: GANState, batch: dict, rngs: Streams) -> tuple[GANState, dict]:
        real = self.pixels.to_gan(batch["x"])
        b = real.shape[0]
        z = jax.random.normal(rngs["latent"], (b, self.model.latent))
        fake = self.generate(state.g_params, z)

        def d_loss_fn(d_params):
            if self.cfg.r1:  # one forward pass on the real batch serves its logits and the penalty
                lr, penalty = self.logits_and_r1(d_params, real)
            else:
                lr, penalty = self.discriminate(d_params, real), 0.0
            lf = self.discriminate(d_params, jax.lax.stop_gradient(fake))
            return jnp.mean(_bce_real(lr)) + jnp.mean(_bce_fake(lf)) + self.cfg.r1 / 2 * penalty, (lr, lf)

        (d_loss, (lr, lf)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
        d_updates, d_opt_state = self.tx_d.update(d_grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        def g_loss_fn(g_params):  # non-saturating: -log D(G(z)), against the updated discriminator
            return jnp.mean(_bce_real(self.discriminate(d_params, self.generate(g_params, z))))

        g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params)
        g_updates, g_opt_state = self.tx_g.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        g_ema = state.g_ema
        if g_ema is not None:
            g_ema = optax.incremental_update(g_params, g_ema, 1.0 - self.cfg.ema)
        sums = {"loss": (g_loss + d_loss) * b, "g_loss": g_loss * b, "d_loss": d_loss * b,
                "d_real": jnp.sum(jax.nn.sigmoid(lr)), "d_fake": jnp.sum(jax.nn.sigmoid(lf)),
                "weight": jnp.asarray(b, jnp.float32)}
        return state.replace(g_params=g_params, d_params=d_params, g_opt_state=g_opt_state,
                             d_opt_state=d_opt_state, g_ema=g_ema), sums

    def r1_penalty(self, d_params, real):
        """E ||grad_x D(x)||^2 over the real batch."""
        return self.logits_and_r1(d_params, real)[1]

    def logits_and_r1(self, d_params, real):
        """The real batch's logits and the R1 penalty, from one forward pass. Pulling back ones
        gives each image its own logit's gradient: a logit depends on its own image only."""
        logits, pullback = jax.vjp(lambda x: self.discriminate(d_params, x), real)
        (grad_x,) = pullback(jnp.ones_like(logits))
        return logits, jnp.mean(jnp.sum(grad_x.reshape(grad_x.shape[0], -1) ** 2, axis=1))

    def eval_step(self, state: GANState, batch: dict) -> dict:
        """Both losses on held-out real images against samples of fixed latents."""
        real = self.pixels.to_gan(batch["x"])
        b = real.shape[0]
        w = batch.get("_valid", jnp.ones((b,), jnp.float32))
        z = jax.random.normal(jax.random.fold_in(jax.random.key(self.seed), EVAL_KEY), (b, self.model.latent))
        lr, lf = self.discriminate(state.d_params, real), self.discriminate(state.d_params, self.generate(state.g_params, z))
        g_loss, d_loss = _bce_real(lf), _bce_real(lr) + _bce_fake(lf)
        return {"loss": jnp.sum((g_loss + d_loss) * w), "g_loss": jnp.sum(g_loss * w), "d_loss": jnp.sum(d_loss * w),
                "d_real": jnp.sum(jax.nn.sigmoid(lr) * w), "d_fake": jnp.sum(jax.nn.sigmoid(lf) * w),
                "weight": jnp.sum(w)}

    def outputs(self, state: GANState, batch: dict):
        """The fixed latent batch's samples, in [-1, 1] (figures)."""
        return self.generate(state.sampler_params, state.fixed_z)

    def learning_rate(self, step: int) -> Optional[float]:
        return float(self.schedule(step)) if self.schedule is not None else None

    # ---- sampling and judging
    def sample(self, g_params, n: int, key: jax.Array, batch: int = 500) -> np.ndarray:
        """`n` samples with pixels in [0, 1], drawn in batches of `batch` (the batch statistics
        the generator normalises by are those of a batch this size)."""
        draw = _sampler(self)
        out = [np.asarray(draw(g_params, jax.random.fold_in(key, i), min(batch, n - i * batch)))
               for i in range(-(-n // batch))]
        return np.concatenate(out)[:n]

    def end_epoch(self, state: GANState, epoch: float, run: Any) -> dict:
        """The epoch's sample grid (plots/samples/epoch_<NNN>.png) and, with a classifier, its
        Frechet distance to the validation images."""
        try:
            save_grid(np.asarray(PixelMap.to_unit(jax.jit(self.outputs)(state, None))),
                      Path(run.plots_dir) / "samples" / f"epoch_{int(round(epoch)):03d}.png")
        except Exception as err:  # noqa: BLE001 - a picture must never fail a run
            log.warning("could not draw the sample grid: %s", err)
        if not self.cfg.classifier or not self.cfg.fid_samples:
            return {}
        from experiments.gan_scores import FeatureStats, frechet_distance

        judge, reference = self.judge(), self.reference_stats()
        key = jax.random.fold_in(jax.random.key(self.seed), FID_KEY)
        _, feats = judge(self.sample(state.sampler_params, self.cfg.fid_samples, key))
        return {"fid": frechet_distance(FeatureStats.of(feats), reference)}

    def judge(self):
        return _judge(str(self.cfg.classifier), tuple(self.model.image_shape), self.cfg.feature_layer)

    def reference_stats(self):
        """Feature statistics of the validation images (the test split when there is none)."""
        from experiments.gan_scores import FeatureStats

        split = self.data.val if self.data.val is not None else self.data.test
        if not hasattr(self, "_reference"):
            x = np.asarray(self.pixels.to_gan(split.x[:10000]))
            self._reference = FeatureStats.of(self.judge()(PixelMap.to_unit(x))[1])
        return self._reference


@lru_cache(maxsize=4)
def _judge(path: str, image_shape: tuple, layer: str):
    from experiments.gan_scores import Judge

    return Judge.load(path, image_shape, layer)


def _sampler(steps: AdversarialSteps):
    if not hasattr(steps, "_draw"):
        steps._draw = jax.jit(lambda g, key, n: PixelMap.to_unit(
            steps.generate(g, jax.random.normal(key, (n, steps.model.latent)))), static_argnums=2)
    return steps._draw


def save_grid(images: np.ndarray, path: Path, scale: int = 2) -> Path:
    """Images (N, H, W, C) in [0, 1] as one square grid PNG (PIL: fast enough for every epoch)."""
    from PIL import Image

    n, h, w, c = images.shape
    side = int(np.ceil(np.sqrt(n)))
    canvas = np.ones((side * (h + 2), side * (w + 2), c), np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, side)
        canvas[r * (h + 2) + 1:r * (h + 2) + 1 + h, q * (w + 2) + 1:q * (w + 2) + 1 + w] = img
    pixels = (np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@figure("adversarial")
def final_samples(steps: AdversarialSteps, state: GANState, data: Any, out_dir: Path) -> list[Path]:
    """plots/samples.png: the fixed latent batch's samples from the parameters `test` scores."""
    return [save_grid(np.asarray(PixelMap.to_unit(jax.jit(steps.outputs)(state, None))), Path(out_dir) / "samples.png")]


# ----------------------------------------------------------------------------- building


def _pixel_map(data: Dataset) -> PixelMap:
    norm = data.meta.get("normalisation", {"mean": 0.0, "std": 1.0})
    return PixelMap(float(norm["mean"]), float(norm["std"]))


def build_steps(exp: Experiment, data: Dataset, hp: Optional[dict] = None) -> AdversarialSteps:
    """The steps from the config; inside a vmapped sweep (`hp`) both players' learning-rate
    tables and differing optimizer fields are traced per trial."""
    from experiments.training.driver import steps_per_epoch

    model = build_model(exp.model, data_info(data))
    objective = build_objective(exp.objective)
    optim_d = exp.optims["optim_d"]
    if hp is None:
        spe = steps_per_epoch(exp, data)
        schedule_g = make_schedule(exp.schedule, exp.optim.lr, spe, exp.trainer.epochs)
        schedule_d = make_schedule(exp.schedule, optim_d.lr, spe, exp.trainer.epochs)
        steps = AdversarialSteps(model, make_transform(exp.optim, schedule_g), make_transform(optim_d, schedule_d),
                                 objective, _pixel_map(data), exp.trainer, exp.seed, schedule_g, data)
        if exp.trainer.classifier:
            steps.judge()  # a bad classifier run fails now, in one line, before any step
        return steps
    tx_g = make_transform(exp.optim, lambda count: hp["lr"][count], hp["optim"])
    tx_d = make_transform(optim_d, lambda count: hp["lr_d"][count], hp["optim_d"])
    return AdversarialSteps(model, tx_g, tx_d, objective, _pixel_map(data), exp.trainer, exp.seed)


def hyperparameters(exps: list[Experiment], steps: list[AdversarialSteps], total_steps: int) -> dict:
    """Per-trial traced values of a vectorised group: both learning-rate tables and the
    optimizer fields that differ."""
    from experiments.training.driver import steps_per_epoch  # noqa: F401 (schedules come from the steps)

    def differing(objs: list, names) -> dict:
        return {n: jnp.asarray([getattr(o, n) for o in objs], jnp.float32) for n in names
                if len({repr(getattr(o, n)) for o in objs}) > 1}

    counts = jnp.arange(total_steps)
    spe = total_steps // max(exps[0].trainer.epochs, 1) or 1
    tables_d = [make_schedule(e.schedule, e.optims["optim_d"].lr, spe, e.trainer.epochs) for e in exps]
    lr = jax.jit(lambda: jnp.stack([jnp.asarray(jax.vmap(s.schedule)(counts), jnp.float32) for s in steps]))()
    lr_d = jax.jit(lambda: jnp.stack([jnp.asarray(jax.vmap(s)(counts), jnp.float32) for s in tables_d]))()
    return {"lr": lr, "lr_d": lr_d,
            "optim": differing([e.optim for e in exps], traced_fields(exps[0].optim)),
            "optim_d": differing([e.optims["optim_d"] for e in exps], traced_fields(exps[0].optims["optim_d"]))}


def vmappable(exp: Experiment) -> set[str]:
    schedule = [f"schedule.{f.name}" for f in dataclasses.fields(exp.schedule)]
    optim_d = exp.optims["optim_d"]
    return {"seed", "optim.lr", *(f"optim.{k}" for k in traced_fields(exp.optim)), *schedule,
            "optim_d.lr", *(f"optim_d.{k}" for k in traced_fields(optim_d))}


def structural(exp: Experiment) -> set[str]:
    return {*(f"optim.{k}" for k in STRUCTURAL_FIELDS), *(f"optim_d.{k}" for k in STRUCTURAL_FIELDS)}


def evaluate(exp: Experiment, run_dir: Path, split: str = "test", which: str = "best") -> dict:
    """`nnrun eval` on a GAN run: draw `trainer.eval_samples` samples from the checkpoint and
    score them with the classifier, beside the real images of `split`. Without a
    classifier: the discriminator's numbers on `split`."""
    from experiments.checkpoints import Checkpointer
    from experiments.data import load_dataset
    from experiments.gan_scores import FeatureStats, scores, verdict
    from experiments.training.driver import evaluate_run, initial_state

    if not exp.trainer.classifier:
        return {**evaluate_run(exp, run_dir, split, which),
                "note": "no trainer.classifier in this run's config: samples not scored"}
    if not Path(exp.trainer.classifier).expanduser().is_dir():
        raise UserError(f"classifier run {exp.trainer.classifier} (trainer.classifier of this run) does not exist; "
                        "restore it, or retrain the GAN with trainer.classifier=<a classifier run>")
    data = load_dataset(exp.data)
    real_split = data.split(split)
    steps = build_steps(exp, data)  # loads and checks the classifier before anything is sampled
    judge = steps.judge()
    with Checkpointer(Path(run_dir) / "checkpoints") as ckpt:
        if which == "best" and ckpt.latest_step("best") is None:
            which = "last"  # no best without a validation metric to choose by
        state, step = ckpt.restore(which, initial_state(steps, jax.random.key(exp.seed), data))
    n = exp.trainer.eval_samples
    key = jax.random.fold_in(jax.random.key(exp.seed), SAMPLE_KEY)
    generated = judge(steps.sample(state.inner.sampler_params, n, key))
    real = judge(PixelMap.to_unit(np.asarray(steps.pixels.to_gan(real_split.x[:n]))))
    train_x = data.train.x[:n]
    reference = FeatureStats.of(judge(PixelMap.to_unit(np.asarray(steps.pixels.to_gan(train_x))))[1])
    gen, ref = scores(*generated, reference), scores(*real, reference)
    side_by_side = {k: {"generated": gen[k], "real": ref[k]} for k in gen if k != "class_share"}
    shares = {c: {"generated": gen["class_share"][c], "real": ref["class_share"][c]} for c in gen["class_share"]}
    return {"split": split, "checkpoint": which, "step": step, "samples": n, "real_images": len(real[0]),
            "classifier": str(judge.run_dir), "verdict": verdict(gen, judge.num_classes),
            **side_by_side, "class_share": shares,
            "fid_reference": f"{len(train_x)} training images"}


register_trainer("adversarial", TrainerEntry(
    schema=AdversarialTrainerConfig,
    description="two players (GANs): generator on `optim`, discriminator on `optim_d`, non-saturating loss",
    steps=build_steps,
    hyperparameters=hyperparameters,
    vmappable=vmappable,
    structural=structural,
    optim_groups=("optim", "optim_d"),
    evaluate=evaluate,
))
