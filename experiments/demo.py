"""`nnrun demo kernels`: what a convolution kernel and a pooling layer do to an image.

The classic image-processing kernels (edge detection, box blur, sharpening) are convolved
with an MNIST test digit or a user's image (made grayscale), and the same image is max-,
average- and min-pooled; everything lands in one PNG grid. It also checks, and prints, the
course's remark that pooling is a convolution with a larger stride: average pooling with an
n x n window equals a convolution with the constant kernel 1/n^2 and stride n.

Convolution here is the course's formula, (I * K)[i, j] = sum_s sum_r I[i+s, j+r] K[s, r]
(no kernel flip, "valid" borders: the output is smaller by the kernel size minus one), which
is also what a CNN's convolution layer computes.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from experiments.errors import UserError

KERNELS: dict[str, np.ndarray] = {
    # responds where brightness changes in any direction; zero on flat regions (its entries sum to 0)
    "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32),
    # each pixel becomes the mean of its 3x3 neighbourhood (entries sum to 1: brightness kept)
    "blur": np.full((3, 3), 1 / 9, np.float32),
    # the pixel plus its difference from its 4 neighbours: edges stand out (entries sum to 1)
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
}
POOL_KINDS = ("max", "avg", "min")


@dataclass
class KernelDemo:
    title: str  # what the image is, e.g. "MNIST test digit #0 (label 7)"
    image: np.ndarray  # (H, W) grayscale in [0, 1]
    convolved: dict[str, np.ndarray]  # kernel name -> (H-2, W-2)
    pooled: dict[str, np.ndarray]  # max / avg / min -> (H/n, W/n)
    as_conv: np.ndarray  # average pooling computed as a strided convolution
    max_abs_diff: float  # between avg pooling and that convolution
    window: int


def load_image(path: Optional[Path] = None, index: Optional[int] = None) -> tuple[np.ndarray, str]:
    """A grayscale image in [0, 1] and its description: the user's file, or MNIST test digit `index`."""
    if path is not None:
        return _user_image(Path(path))
    return _mnist_digit(0 if index is None else index)


def _user_image(path: Path) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"--image {path}: no such file; give a PNG or JPEG image (any size, colour or grayscale)")
    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"--image {path}: not a readable image ({type(err).__name__}); give a PNG or JPEG file") from None
    if min(gray.shape) < 4:
        raise UserError(f"--image {path}: {gray.shape[1]}x{gray.shape[0]} pixels is too small; give at least 4x4")
    return gray, f"{path.name} (grayscale)"


def _mnist_digit(index: int) -> tuple[np.ndarray, str]:
    from experiments.data.mnist import PACKAGED_MNIST_DIR

    with gzip.open(PACKAGED_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(PACKAGED_MNIST_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    if not 0 <= index < len(images):
        raise UserError(f"--index {index}: MNIST has test digits 0..{len(images) - 1}")
    return images[index].astype(np.float32) / 255.0, f"MNIST test digit #{index} (label {labels[index]})"


def correlate(image: np.ndarray, kernel: np.ndarray, stride: int = 1) -> np.ndarray:
    """The course's convolution of a 2-D image with a 2-D kernel, valid borders, any stride."""
    import jax

    x = np.asarray(image, np.float32)[None, :, :, None]
    k = np.asarray(kernel, np.float32)[:, :, None, None]
    y = jax.lax.conv_general_dilated(x, k, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return np.asarray(y)[0, :, :, 0]


def kernel_demo(image: np.ndarray, title: str, window: int = 2) -> KernelDemo:
    from experiments.models.layers import pool

    if window < 1 or window > min(image.shape):
        raise UserError(f"--window {window}: use 1..{min(image.shape)} for this {image.shape[1]}x{image.shape[0]} image")
    x = image[None, :, :, None]
    pooled = {kind: np.asarray(pool(x, kind, window))[0, :, :, 0] for kind in POOL_KINDS}
    as_conv = correlate(image, np.full((window, window), 1 / window**2, np.float32), stride=window)
    diff = float(np.max(np.abs(pooled["avg"] - as_conv)))
    convolved = {name: correlate(image, k) for name, k in KERNELS.items()}
    return KernelDemo(title, image, convolved, pooled, as_conv, diff, window)


def draw(demo: KernelDemo, path: Path) -> Path:
    """One PNG: the image and its three convolutions (top row), its three poolings and
    average pooling computed as a convolution (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = demo.window
    panels = [
        (demo.image, f"input {demo.image.shape[1]}x{demo.image.shape[0]}", (0, 1)),
        *((demo.convolved[k], f"{k} kernel {_matrix(KERNELS[k])}", None) for k in KERNELS),
        *((demo.pooled[k], f"{k} pool {n}x{n}, stride {n}", (0, 1)) for k in POOL_KINDS),
        (demo.as_conv, f"conv 1/{n * n}, stride {n}: max |diff| {demo.max_abs_diff:.1e}", (0, 1)),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(13, 7.2))
    for ax, (img, label, limits) in zip(axes.ravel(), panels):
        vmin, vmax = limits or (None, None)
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(label, fontsize=8.5)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"convolution kernels and pooling on {demo.title}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)  # atomic: an interrupted run leaves no half-written PNG behind
    return path


def _matrix(k: np.ndarray) -> str:
    if np.allclose(k, k.flat[0]):
        return f"1/{k.size} x ones({k.shape[0]}x{k.shape[1]})"
    return "[" + " ; ".join(" ".join(f"{v:g}" for v in row) for row in k) + "]"
