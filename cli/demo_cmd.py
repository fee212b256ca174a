"""`nnrun demo ...`: small demonstrations of the course's building blocks (no training).

Typer only at import: the demos import numpy, jax and matplotlib when they run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

demo_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, add_completion=False,
                       help="Demonstrations of the building blocks: nnrun demo kernels")


@demo_app.command()
def kernels(
    image: Optional[Path] = typer.Option(None, "--image", metavar="PATH", help="Your image (PNG, JPEG; made grayscale)."),
    index: Optional[int] = typer.Option(None, "--index", metavar="N", help="MNIST test digit N (default 0)."),
    window: int = typer.Option(2, "--window", metavar="N", help="Pooling window and stride."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="Where the PNG goes (default: <outputs>/demo)."),
):
    """Edge, blur and sharpen kernels and max/avg/min pooling applied to a digit or your image,
    drawn as one PNG; prints the check that average pooling is a strided convolution."""
    raise typer.Exit(run_kernels(image, index, window, out))


def run_kernels(image: Optional[Path], index: Optional[int], window: int, out: Optional[Path]) -> int:
    from cli.commands import console
    from experiments.demo import draw, kernel_demo, load_image
    from experiments.errors import UserError

    if image is not None and index is not None:
        raise UserError("give --image PATH or --index N, not both")
    pixels, title = load_image(image, index)
    demo = kernel_demo(pixels, title, window)
    name = f"kernels-{image.stem}.png" if image is not None else f"kernels-mnist-{0 if index is None else index}.png"
    path = draw(demo, (out or Path(os.environ.get("NNRUN_OUTPUTS") or "outputs") / "demo") / name)
    n = demo.window
    console.print(f"{title}: {pixels.shape[1]}x{pixels.shape[0]} pixels", markup=False, highlight=False)
    for kind, pooled in demo.pooled.items():
        console.print(f"  {kind} pooling {n}x{n}, stride {n}: {pooled.shape[1]}x{pooled.shape[0]}",
                      markup=False, highlight=False)
    console.print(f"check: average pooling {n}x{n} == convolution with the constant kernel 1/{n * n} and stride {n}: "
                  f"max |difference| = {demo.max_abs_diff:.2e} ({'equal' if demo.max_abs_diff < 1e-5 else 'NOT equal'} "
                  "up to float32 rounding)", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    return 0
