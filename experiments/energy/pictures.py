"""Pictures of energy-network dynamics: a strip of frames and an animated GIF of a state
being restored update by update, with its energy trace."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def frame_indices(count: int, frames: int) -> list[int]:
    """`frames` indices spread over 0..count-1 (first and last included, no repeats)."""
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, min(frames, count))})


def save_gif(states: np.ndarray, shape: Sequence[int], path: Path, frames: int = 60, scale: int = 8) -> Path:
    """Animated GIF (pillow) of {0,1} states (T, N) reshaped to `shape`, ink black on white."""
    from PIL import Image

    idx = frame_indices(len(states), frames)
    h, w = int(shape[0]), int(shape[1])
    images = [Image.fromarray(((1 - states[i].reshape(h, w)) * 255).astype(np.uint8)).resize(
        (w * scale, h * scale), Image.NEAREST) for i in idx]
    durations = [80] * (len(images) - 1) + [1200]  # hold the final state
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def save_restoration(states: np.ndarray, energies: np.ndarray, shape: Sequence[int], out_dir: Path,
                     title: str = "", frames: int = 10, stem: str = "restore") -> list[Path]:
    """<stem>.png: a strip of `frames` states with their update counts, above the energy
    after every update; <stem>.gif: the same dynamics animated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    idx = frame_indices(len(states), frames)
    fig = plt.figure(figsize=(1.4 * len(idx), 3.6))
    grid = fig.add_gridspec(2, len(idx), height_ratios=(1, 1))
    for j, i in enumerate(idx):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(states[i].reshape(shape), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{i} upd.", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[1, :])
    ax.plot(np.arange(len(energies)), energies, color="tab:blue")
    ax.set_xlabel("single-unit updates")
    ax.set_ylabel("energy")
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = out_dir / f"{stem}.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [png, save_gif(states, shape, out_dir / f"{stem}.gif")]


def save_escape(params, stuck: np.ndarray, frames: np.ndarray, temps: np.ndarray, shape: Sequence[int],
                patterns: np.ndarray, out_dir: Path, count: int = 10) -> list[Path]:
    """plots/escape.png: a spurious fixed point (left) that deterministic updates never leave,
    and the annealed trajectory from it (frames with their temperatures), with the energy per
    sweep against the energy of the stored patterns; escape.gif animates the trajectory."""
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.models import hopfield as H

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    energies = np.asarray(H.energy(params, jnp.asarray(frames)))
    e_stuck = float(H.energy(params, jnp.asarray(stuck)))
    e_patterns = np.asarray(H.energy(params, jnp.asarray(patterns)))
    idx = frame_indices(len(frames), count)
    fig = plt.figure(figsize=(1.4 * (len(idx) + 1), 3.8))
    grid = fig.add_gridspec(2, len(idx) + 1)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(stuck.reshape(shape), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title("stuck (T=0)", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    for j, i in enumerate(idx):
        ax = fig.add_subplot(grid[0, j + 1])
        ax.imshow(frames[i].reshape(shape), cmap="gray_r", vmin=0, vmax=1)
        t = f"T={temps[i]:.3g}" if i < len(temps) else "T=0"
        ax.set_title(f"sweep {i + 1}\n{t}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[1, :])
    ax.plot(np.arange(1, len(energies) + 1), energies, label="annealed state")
    ax.axhline(e_stuck, color="tab:red", ls="--", label="the spurious state (deterministic: stays)")
    ax.axhline(float(e_patterns.min()), color="k", ls=":", label="deepest stored pattern")
    ax.set_xlabel("sweep")
    ax.set_ylabel("energy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("escaping a spurious state by simulated annealing")
    fig.tight_layout()
    png = out_dir / "escape.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [png, save_gif(np.concatenate([stuck[None], frames]), shape, out_dir / "escape.gif", frames=len(frames) + 1)]
