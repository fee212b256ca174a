"""What an autoencoder learned, in pictures and one measured check (drawn after training
beside plots/reconstructions.png, from figures.py):

- latent_space.png: for a 2-D code, the test set scattered in latent space, coloured by label;
- interpolation.png: codes interpolated between pairs of test images of different classes, decoded;
- prior_samples.png: for a VAE, decodings of z ~ N(0, I);
- denoising.png and denoising.json: for a denoising model, clean / corrupted / denoised test
  images and the measured check: MSE of the denoised images to the clean ones against the
  MSE of the corrupted inputs (the same noise as in training, fixed key).

Also `encode_split`, the codes of a whole split (`nnrun latents`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DENOISE_KEY = 11


def _variables(state: Any) -> dict:
    return {"params": state.params, **state.model_state}


def encode_split(steps: Any, state: Any, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The codes of `x` (the means of q(z|x) for a VAE), in batches."""
    fn = jax.jit(lambda v, xb: steps.model.apply(v, xb, method="encode"))
    variables = _variables(state)
    return np.concatenate([np.asarray(fn(variables, jnp.asarray(x[i:i + batch]))) for i in range(0, len(x), batch)])


def _decode(steps: Any, state: Any, z: np.ndarray) -> np.ndarray:
    out = steps.model.apply(_variables(state), jnp.asarray(z), method="decode")
    return np.asarray(steps.objective.recon(out))


def draw_autoencoder_figures(steps: Any, state: Any, data: Any, out_dir: Path) -> list[Path]:
    model = getattr(steps, "model", None)  # an RBM's steps have none: its trainer draws its own figures
    if not hasattr(model, "encode") or getattr(model, "kind", None) is None:
        return []
    shape = tuple(data.test.x.shape[1:])
    paths = [_interpolation(steps, state, data, shape, out_dir)]
    if model.code == 2:
        paths.append(_latent_space(steps, state, data, out_dir))
    if model.variational:
        paths.append(_prior_samples(steps, state, shape, out_dir))
    if model.noise != "none":
        paths.append(_denoising(steps, state, data, shape, out_dir))
    return paths


def _latent_space(steps, state, data, out_dir: Path) -> Path:
    from experiments.figures import _pyplot, _save

    x, y = data.test.x[:5000], data.test.y[:5000]
    codes = encode_split(steps, state, x)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    points = ax.scatter(codes[:, 0], codes[:, 1], c=y, cmap="tab10", s=3, alpha=0.7)
    fig.colorbar(points, ax=ax, ticks=range(int(y.max()) + 1), label="label")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(f"{len(x)} test images in the 2-D latent space")
    fig.tight_layout()
    return _save(fig, plt, out_dir / "latent_space.png")


def _interpolation(steps, state, data, shape, out_dir: Path, pairs: int = 4, points: int = 10) -> Path:
    from experiments.figures import _pyplot, _save

    x, y = data.test.x, data.test.y
    firsts = [int(np.flatnonzero(y == c)[0]) for c in range(min(2 * pairs, int(y.max()) + 1))]
    ends = [(firsts[2 * i], firsts[2 * i + 1]) for i in range(len(firsts) // 2)]
    codes = encode_split(steps, state, x[[i for pair in ends for i in pair]])
    t = np.linspace(0, 1, points)[:, None]
    rows = [_decode(steps, state, (1 - t) * codes[2 * k] + t * codes[2 * k + 1]).reshape((points, *shape))
            for k in range(len(ends))]
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), points, figsize=(1.0 * points, 1.05 * len(rows)), squeeze=False)
    for r, images in enumerate(rows):
        for c in range(points):
            axes[r][c].imshow(images[c].squeeze(), cmap="gray")
            axes[r][c].axis("off")
    fig.suptitle("decoded codes on straight lines between two test images")
    fig.tight_layout()
    return _save(fig, plt, out_dir / "interpolation.png")


def _prior_samples(steps, state, shape, out_dir: Path, side: int = 8) -> Path:
    from experiments.training.adversarial import save_grid

    z = np.asarray(jax.random.normal(jax.random.key(0), (side * side, steps.model.code)))
    return save_grid(np.clip(_decode(steps, state, z).reshape((side * side, *shape)), 0, 1),
                     out_dir / "prior_samples.png")


def denoising_check(steps: Any, state: Any, x: np.ndarray) -> dict:
    """MSE to the clean images of the corrupted inputs and of their reconstructions."""
    from experiments.models.autoencoder import corrupt

    model = steps.model
    noisy = np.asarray(corrupt(jnp.asarray(x), jax.random.key(DENOISE_KEY), model.noise, model.noise_level))
    out = jax.jit(lambda v, xb: steps.objective.recon(model.apply(v, xb, train=False)))
    denoised = np.concatenate([np.asarray(out(_variables(state), jnp.asarray(noisy[i:i + 1000])))
                               for i in range(0, len(x), 1000)]).reshape(x.shape)
    return {"noise": model.noise, "noise_level": model.noise_level, "images": len(x),
            "mse_noisy_input": float(np.mean((noisy - x) ** 2)), "mse_denoised": float(np.mean((denoised - x) ** 2)),
            "noisy": noisy, "denoised": denoised}


def _denoising(steps, state, data, shape, out_dir: Path, count: int = 10) -> Path:
    from experiments.figures import _pyplot, _save

    check = denoising_check(steps, state, data.test.x[:2000])
    numbers = {k: v for k, v in check.items() if k not in ("noisy", "denoised")}
    (out_dir / "denoising.json").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "denoising.json").write_text(json.dumps(numbers, indent=2) + "\n")
    plt = _pyplot()
    fig, axes = plt.subplots(3, count, figsize=(1.1 * count, 3.6), squeeze=False)
    for r, images in enumerate((data.test.x, check["noisy"], check["denoised"])):
        for c in range(count):
            axes[r][c].imshow(np.clip(images[c].squeeze(), 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
    for r, label in enumerate(("clean", "noisy", "denoised")):
        axes[r][0].set_ylabel(label)
    fig.suptitle(f"{check['noise']} noise {check['noise_level']}: MSE to clean {numbers['mse_noisy_input']:.4f} "
                 f"(noisy input) -> {numbers['mse_denoised']:.4f} (denoised), {numbers['images']} test images")
    fig.tight_layout()
    return _save(fig, plt, out_dir / "denoising.png")
