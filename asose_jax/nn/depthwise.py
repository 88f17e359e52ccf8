"""Depthwise convolution with a backend-chosen implementation.

XLA on CPU runs a grouped convolution (``feature_group_count=C``) several times
slower than summing ``k*k`` shifted, strided views of the input, each scaled by
one kernel tap (docs/performance.md has the measurements). On GPU and TPU the grouped
convolution is the fast path. Both implementations compute the same function:

    y[n, h, w, c] = sum_{i, j} x_pad[n, h*s + i*d, w*s + j*d, c] * k[i, j, 0, c]

with ``x`` padded by ``p`` on each spatial side, stride ``s`` and dilation ``d``.

The shifted sum is written out tap by tap, so XLA fuses it into one pass over the
input, and its result passes through ``lax.optimization_barrier``: XLA would
otherwise fuse the ``k*k`` taps into every consumer (a mixed op's ten input
gradients became one fusion of 869 instructions, and a DARTS supernet took 4x as
long to compile). It has a hand-written VJP that saves only ``x`` and ``k``: the
input gradient is itself a stride-1 shifted sum, the kernel gradient one variadic
reduction (``tap_correlations``); both are differentiable again (second-order
architecture gradients).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from asose_jax.nn.conv import resolve_impl


def _out_size(size: int, k: int, stride: int, dilation: int, pad: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _geometry(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, pad: int):
    k = kernel.shape[0]
    out_hw = (
        _out_size(x.shape[1], k, stride, dilation, pad),
        _out_size(x.shape[2], k, stride, dilation, pad),
    )
    return k, out_hw


def _pad_spatial(x: jax.Array, pad: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _tap_views(x_pad: jax.Array, k: int, stride: int, dilation: int, out_hw: tuple[int, int]) -> list[jax.Array]:
    """The ``k*k`` strided views of the padded input, tap (i, j) at index ``i*k + j``: each [N, Ho, Wo, C]."""
    n, _, _, c = x_pad.shape
    views = []
    for i in range(k):
        for j in range(k):
            start = (0, i * dilation, j * dilation, 0)
            limit = (n, start[1] + (out_hw[0] - 1) * stride + 1, start[2] + (out_hw[1] - 1) * stride + 1, c)
            views.append(lax.slice(x_pad, start, limit, (1, stride, stride, 1)))
    return views


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, pad: int):
    """Depthwise conv as one fused sum of the ``k*k`` shifted views. x: [N,H,W,C], kernel: [k,k,1,C]."""
    k, out_hw = _geometry(x, kernel, stride, dilation, pad)
    taps = kernel.reshape(k * k, -1)
    views = _tap_views(_pad_spatial(x, pad), k, stride, dilation, out_hw)
    return lax.optimization_barrier(sum(view * taps[t] for t, view in enumerate(views)))


def _shifted_fwd(x, kernel, stride, dilation, pad):
    return depthwise_conv_shifted(x, kernel, stride, dilation, pad), (x, kernel)


def _shifted_bwd(stride, dilation, pad, residuals, g):
    """dx: a stride-1 shifted sum of the dilated, padded g with the flipped kernel; dk: ``tap_correlations``."""
    x, kernel = residuals
    k, out_hw = _geometry(x, kernel, stride, dilation, pad)
    span = (k - 1) * dilation
    hp, wp = x.shape[1] + 2 * pad, x.shape[2] + 2 * pad
    g_full = lax.pad(
        g,
        jnp.zeros((), g.dtype),
        (
            (0, 0, 0),
            (span, hp - (out_hw[0] - 1) * stride - 1, stride - 1),
            (span, wp - (out_hw[1] - 1) * stride - 1, stride - 1),
            (0, 0, 0),
        ),
    )
    dx_pad = depthwise_conv_shifted(g_full, kernel[::-1, ::-1], 1, dilation, 0)
    dx = dx_pad[:, pad : pad + x.shape[1], pad : pad + x.shape[2], :]
    d_taps = tap_correlations(_pad_spatial(x, pad), g, k, stride, dilation)
    return dx.astype(x.dtype), d_taps.reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv_shifted.defvjp(_shifted_fwd, _shifted_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def tap_correlations(x_pad: jax.Array, g: jax.Array, k: int, stride: int, dilation: int) -> jax.Array:
    """The kernel gradient of a depthwise conv: [k*k, C], row ``i*k + j`` = sum_{n,h,w} view_(i,j) * g.

    x_pad: [N, Hp, Wp, C] (the padded input), g: [N, Ho, Wo, C]. One variadic reduction, so g and x_pad
    are read once, not once per tap.
    """
    products = tuple(view * g for view in _tap_views(x_pad, k, stride, dilation, g.shape[1:3]))
    zeros = tuple(jnp.zeros((), g.dtype) for _ in products)
    sums = lax.reduce(products, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b, strict=True)), (0, 1, 2))
    return lax.optimization_barrier(jnp.stack(sums))


def _tap_correlations_fwd(x_pad, g, k, stride, dilation):
    return tap_correlations(x_pad, g, k, stride, dilation), (x_pad, g)


def _tap_correlations_bwd(k, stride, dilation, residuals, ct):
    """The map is bilinear: both cotangents come from a depthwise conv of x_pad with ``ct`` as its kernel."""
    x_pad, g = residuals
    kernel = ct.reshape(k, k, 1, -1)
    dg, conv_vjp = jax.vjp(lambda xp: depthwise_conv_shifted(xp, kernel, stride, dilation, 0), x_pad)
    (dx_pad,) = conv_vjp(g)
    return dx_pad, dg


tap_correlations.defvjp(_tap_correlations_fwd, _tap_correlations_bwd)


def depthwise_conv_grouped(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, pad: int):
    """Depthwise conv as an XLA grouped convolution. x: [N,H,W,C], kernel: [k,k,1,C]."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )


def depthwise_conv(
    x: jax.Array, kernel: jax.Array, stride: int = 1, dilation: int = 1, pad: int = 0, impl: str = "auto"
) -> jax.Array:
    """Depthwise convolution. x: [N,H,W,C], kernel: [k,k,1,C] -> [N,Ho,Wo,C]."""
    if resolve_impl(impl) == "cpu":
        return depthwise_conv_shifted(x, kernel, stride, dilation, pad)
    return depthwise_conv_grouped(x, kernel, stride, dilation, pad)


class DepthwiseConv(nn.Module):
    """Bias-free depthwise ``k x k`` convolution; kernel laid out like ``nn.Conv``'s."""

    kernel_size: int
    stride: int = 1
    dilation: int = 1
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, x.shape[-1]), jnp.float32)
        pad = self.dilation * (k - 1) // 2
        return depthwise_conv(x, kernel.astype(x.dtype), self.stride, self.dilation, pad, self.impl)
