"""Depthwise convolution with a backend-chosen implementation.

XLA on CPU runs a grouped convolution (``feature_group_count=C``) several times
slower than summing ``k*k`` shifted, strided views of the input, each scaled by
one kernel tap (measured here at 64x32x32x32: forward 77 vs 12 ms for 3x3,
forward+backward 1.8 s vs 0.18 s for 7x7). On GPU and TPU the grouped
convolution is the fast path. Both implementations compute the same function:

    y[n, h, w, c] = sum_{i, j} x_pad[n, h*s + i*d, w*s + j*d, c] * k[i, j, 0, c]

with ``x`` padded by ``p`` on each spatial side, stride ``s`` and dilation ``d``.
The shifted sum has a hand-written VJP that saves only ``x`` and ``k`` (autodiff
would keep all ``k*k`` shifted views alive for the backward pass); its input
gradient is itself a stride-1 shifted sum, so it is differentiable again
(second-order architecture gradients).
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


def _to_phases(x: jax.Array, stride: int, pad: int, out_hw: tuple[int, int], k: int, dilation: int):
    """Pads x and splits it into stride phases: [s, s, N, Hp/s, Wp/s, C].

    Tap (i, j) then reads the contiguous block at phase (i*d % s, j*d % s),
    offset (i*d // s, j*d // s), size out_hw, so a strided view becomes one
    ``dynamic_slice`` and the loop over taps can be a ``fori_loop``.
    """
    n, h, w, c = x.shape
    reach = (k - 1) * dilation
    hp = -(-max(h + 2 * pad, reach + (out_hw[0] - 1) * stride + 1) // stride) * stride
    wp = -(-max(w + 2 * pad, reach + (out_hw[1] - 1) * stride + 1) // stride) * stride
    x_pad = jnp.pad(x, ((0, 0), (pad, hp - h - pad), (pad, wp - w - pad), (0, 0)))
    phases = x_pad.reshape(n, hp // stride, stride, wp // stride, stride, c)
    return phases.transpose(2, 4, 0, 1, 3, 5)


def _tap_start(t, k: int, stride: int, dilation: int):
    oh, ow = (t // k) * dilation, (t % k) * dilation
    return (oh % stride, ow % stride, 0, oh // stride, ow // stride, 0)


def _geometry(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, pad: int):
    k = kernel.shape[0]
    out_hw = (
        _out_size(x.shape[1], k, stride, dilation, pad),
        _out_size(x.shape[2], k, stride, dilation, pad),
    )
    return k, out_hw


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, pad: int):
    """Depthwise conv as a loop over taps of shifted views. x: [N,H,W,C], kernel: [k,k,1,C]."""
    k, out_hw = _geometry(x, kernel, stride, dilation, pad)
    phases = _to_phases(x, stride, pad, out_hw, k, dilation)
    taps = kernel.reshape(k * k, -1)
    n, c = x.shape[0], x.shape[3]
    size = (1, 1, n, *out_hw, c)

    def add_tap(t, out):
        view = lax.dynamic_slice(phases, _tap_start(t, k, stride, dilation), size)[0, 0]
        return out + view * taps[t]

    out = jnp.zeros((n, *out_hw, c), jnp.result_type(x, kernel))
    return lax.fori_loop(0, k * k, add_tap, out)


def _shifted_fwd(x, kernel, stride, dilation, pad):
    return depthwise_conv_shifted(x, kernel, stride, dilation, pad), (x, kernel)


def _shifted_bwd(stride, dilation, pad, residuals, g):
    """dx: a stride-1 shifted sum of the dilated, padded g with the flipped kernel; dk: one reduction per tap."""
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

    phases = _to_phases(x, stride, pad, out_hw, k, dilation)
    size = (1, 1, *g.shape)

    def tap_grad(t, d_taps):
        view = lax.dynamic_slice(phases, _tap_start(t, k, stride, dilation), size)[0, 0]
        return d_taps.at[t].set(jnp.einsum("nhwc,nhwc->c", view, g))

    d_taps = lax.fori_loop(0, k * k, tap_grad, jnp.zeros((k * k, x.shape[3]), g.dtype))
    return dx.astype(x.dtype), d_taps.reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv_shifted.defvjp(_shifted_fwd, _shifted_bwd)


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
