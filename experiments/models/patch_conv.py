"""Convolution as patch matrix x weight matrix (im2col + GEMM) on batch-minor activations.

Why this exists: on XLA-CPU, LeNet-sized convolutions (1 to 16 channels, 5x5 kernels)
and above all their weight and input gradients run far below the machine's matmul speed,
and every elementwise op after them works on arrays whose minor axis has 6 or 16
elements. Keeping activations as (C, H, W, N) -- "CHWN", batch minor -- turns every
convolution and both of its gradients into one well-shaped matmul over a long axis
(kh*kw*C x oh*ow*N), and lets tanh, pooling and their gradients vectorise along the
batch. The speed it buys, on CPU and GPU, is measured by benchmarks/lenet5_layouts.py
(numbers: docs/results.md).

The gradient is written by hand (custom_vjp) because the automatic transpose of the
patch extraction is 25 pad+add ops that XLA fused into the next consumer, recomputing
them for every element of a 4x larger array; here it is one materialised col2im.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

NHWC = "NHWC"
CHWN = "CHWN"
LAYOUTS = (NHWC, CHWN)


def to_layout(x: jnp.ndarray, layout: str) -> jnp.ndarray:
    """NHWC -> `layout`. CHWN is NHWC with the first and last axes swapped, so the same
    call converts back."""
    return jnp.swapaxes(x, 0, 3) if layout == CHWN else x


from_layout = to_layout


def _patches(x: jnp.ndarray, kh: int, kw: int, stride: int) -> jnp.ndarray:
    """(C, H, W, N) -> (kh*kw*C, oh*ow*N), rows ordered (i, j, c) like an HWIO kernel.

    Built in two stacks of kw then kh shifted views: XLA fuses each 5-way stack into one
    copy, where a single 25-way stack was materialised slice by slice first."""
    c, h, w, n = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = jnp.stack([x[:, :, j : j + stride * (ow - 1) + 1 : stride] for j in range(kw)])  # (kw, C, H, ow, N)
    rows = jnp.stack([cols[:, :, i : i + stride * (oh - 1) + 1 : stride] for i in range(kh)])  # (kh, kw, C, oh, ow, N)
    return rows.reshape(kh * kw * c, oh * ow * n)


def _col2im(d_patches: jnp.ndarray, x_shape: tuple[int, ...], kh: int, kw: int, stride: int) -> jnp.ndarray:
    """The transpose of `_patches`: scatter-add each patch row back onto the input."""
    c, h, w, n = x_shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    d = d_patches.reshape(kh, kw, c, oh, ow, n)
    dx = jnp.zeros(x_shape, d_patches.dtype)
    for i in range(kh):
        for j in range(kw):
            dx = dx.at[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride].add(d[i, j])
    # keeps XLA from fusing the 25-way sum into the (often larger) consumer, which would
    # recompute it per consumer element
    return jax.lax.optimization_barrier(dx)


def _pad(x: jnp.ndarray, kh: int, kw: int, stride: int, padding) -> tuple[jnp.ndarray, list]:
    """`padding`: VALID, SAME, or explicit ((top, bottom), (left, right)) as lax takes it."""
    if padding == "VALID":
        return x, [(0, 0), (0, 0)]
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride, stride), padding)
    else:
        pads = [tuple(p) for p in padding]
    return jnp.pad(x, ((0, 0), *pads, (0, 0))), pads


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_chwn(x: jnp.ndarray, kernel: jnp.ndarray, stride: int = 1, padding="VALID") -> jnp.ndarray:
    """2-D convolution of x (C, H, W, N) by an HWIO kernel; returns (O, oh, ow, N).
    Same maths as lax.conv_general_dilated with NHWC/HWIO/NHWC dimension numbers; `padding`
    is VALID, SAME or ((top, bottom), (left, right)) (a hashable tuple)."""
    kh, kw, c, o = kernel.shape
    xp, _ = _pad(x, kh, kw, stride, padding)
    oh, ow = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    y = kernel.reshape(kh * kw * c, o).T @ _patches(xp, kh, kw, stride)
    return y.reshape(o, oh, ow, x.shape[3])


def _conv_fwd(x, kernel, stride, padding):
    # the patches are recomputed in the backward pass rather than saved: no slower when
    # measured, and a kh*kw-times smaller residual
    return conv_chwn(x, kernel, stride, padding), (x, kernel)


def _conv_bwd(stride, padding, residuals, g):
    x, kernel = residuals
    kh, kw, c, o = kernel.shape
    xp, pads = _pad(x, kh, kw, stride, padding)
    g2 = g.reshape(o, -1)
    d_kernel = (_patches(xp, kh, kw, stride) @ g2.T).reshape(kernel.shape)
    # unused (and removed by XLA) when x is the network's input
    dxp = _col2im(kernel.reshape(kh * kw * c, o) @ g2, xp.shape, kh, kw, stride)
    (top, _), (left, _) = pads
    dx = dxp[:, top : top + x.shape[1], left : left + x.shape[2]]
    return dx, d_kernel


conv_chwn.defvjp(_conv_fwd, _conv_bwd)
