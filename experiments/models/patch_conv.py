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

`conv_nhwc` keeps XLA's NHWC convolution for the forward pass and the input gradient and
replaces only XLA-CPU's kernel gradient by blocked patch matmuls (nn.Conv's
`conv_general_dilated` hook; layers.Conv uses it for every NHWC model).
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

AUTO = "auto"


def resolve_layout(layout: str) -> str:
    """`auto`: CHWN on CPU, where patch matmuls beat XLA's convolutions (ResNet-20: 194 against
    142 images/s, docs/results.md), NHWC elsewhere (cuDNN's convolutions)."""
    if layout != AUTO:
        return layout
    return CHWN if jax.default_backend() == "cpu" else NHWC


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


def _explicit_pads(hw: tuple[int, int], kh: int, kw: int, stride: int, padding) -> tuple:
    """`padding` -- VALID, SAME, or explicit ((top, bottom), (left, right)) as lax takes it --
    as explicit pairs of ints (hashable, for custom_vjp's static arguments)."""
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(hw, (kh, kw), (stride, stride), padding)
    return tuple(tuple(int(v) for v in p) for p in padding)


def _pad(x: jnp.ndarray, kh: int, kw: int, stride: int, padding) -> tuple[jnp.ndarray, tuple]:
    pads = _explicit_pads(x.shape[1:3], kh, kw, stride, padding)
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


# ----------------------------------------------------------------------------- NHWC, XLA forward

# Bytes of one block of patches in `_blocked_kernel_grad`: about the size of a core's L2
# cache, so each block is written and read back without a trip to memory.
PATCH_BLOCK_BYTES = 1 << 20
_NHWC_DIMS = ("NHWC", "HWIO", "NHWC")


def conv_nhwc(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
              dimension_numbers=None, feature_group_count=1, **kwargs):
    """lax.conv_general_dilated with a faster kernel gradient, for nn.Conv(conv_general_dilated=...).

    Forward and input gradient are XLA's convolutions. The kernel gradient XLA-CPU derives
    is itself a convolution (the batch contracted, a kernel as large as the image), and
    for ResNet's 32x32x16 stage it took several times as long as the forward pass; here it
    is a sum over batch blocks of patches^T @ grad, each block cache-sized. Other backends
    (cuDNN's kernel gradient is fast) and cases other than a plain stride-1 NHWC/HWIO
    convolution go to lax unchanged."""
    dims = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or _NHWC_DIMS)
    plain = (jax.default_backend() == "cpu"
             and dims == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_DIMS)
             and tuple(window_strides) == (1, 1) and feature_group_count == 1
             and kwargs.get("batch_group_count", 1) == 1
             and all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation)))
    if not plain:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, **kwargs)
    return _conv_nhwc(lhs, rhs, _explicit_pads(lhs.shape[1:3], *rhs.shape[:2], 1, padding))


def _xla_conv(x, kernel, padding):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC_DIMS)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_nhwc(x, kernel, padding):
    return _xla_conv(x, kernel, padding)


def _conv_nhwc_fwd(x, kernel, padding):
    return _xla_conv(x, kernel, padding), (x, kernel)


def _conv_nhwc_bwd(padding, residuals, g):
    x, kernel = residuals
    _, input_grad = jax.vjp(lambda x: _xla_conv(x, kernel, padding), x)
    return input_grad(g)[0], _blocked_kernel_grad(x, g, kernel.shape, padding)


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _blocked_kernel_grad(x, g, kernel_shape, padding):
    """d kernel = sum over the batch of patches(x)^T @ g, in blocks of whole images."""
    kh, kw, c, o = kernel_shape
    n, oh, ow, _ = g.shape
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    per_image = oh * ow * kh * kw * c * x.dtype.itemsize
    block = max(d for d in range(1, n + 1) if n % d == 0 and (d == 1 or d * per_image <= PATCH_BLOCK_BYTES))

    def add_block(acc, xg):
        xb, gb = xg
        patches = jnp.concatenate([xb[:, i : i + oh, j : j + ow] for i in range(kh) for j in range(kw)], axis=-1)
        return acc + patches.reshape(-1, kh * kw * c).T @ gb.reshape(-1, o), None

    blocks = (xp.reshape(n // block, block, *xp.shape[1:]), g.reshape(n // block, block, oh, ow, o))
    acc, _ = jax.lax.scan(add_block, jnp.zeros((kh * kw * c, o), g.dtype), blocks)
    return acc.reshape(kernel_shape).astype(x.dtype)
