"""Bias-free 2-D convolution whose kernel gradient is one matmul (im2col) on CPU.

XLA on CPU computes the kernel gradient of a convolution (a "backward filter"
convolution) about 14x slower than the equivalent matrix products; the forward
and input-gradient convolutions are fast. On CPU the kernel gradient is
therefore computed from the stacked shifted views (im2col) of the input:

    dK = patches^T g,  patches[(n, h, w), (i, j, c)] = x_pad[n, h*sh + i, w*sw + j, c]   (one matmul)

and the input gradient is written out as a convolution with the swapped kernel (``input_gradient``). On GPU and
TPU the plain convolution and its autodiff are used.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]
IMPLEMENTATIONS = ("auto", "cpu", "xla")
_AUTO = contextvars.ContextVar("asose_jax_conv_auto", default=None)


def resolve_impl(impl: str) -> str:
    """The convolution kernels to use: ``cpu`` (shifted-sum depthwise, im2col kernel
    gradients) or ``xla`` (plain XLA convolutions); ``auto`` picks ``cpu`` on the CPU backend
    (or what an enclosing ``auto_impl`` says)."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown convolution implementation {impl!r}; use one of {IMPLEMENTATIONS}")
    if impl == "auto":
        return _AUTO.get() or ("cpu" if jax.default_backend() == "cpu" else "xla")
    return impl


@contextlib.contextmanager
def auto_impl(impl: str) -> Iterator[None]:
    """Functions traced inside the block resolve ``auto`` to ``impl``: e.g. ``xla``, so that XLA's cost
    analysis counts the FLOPs of plain convolutions on every backend."""
    token = _AUTO.set(resolve_impl(impl))
    try:
        yield
    finally:
        _AUTO.reset(token)


def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """Plain XLA convolution, NHWC x HWIO -> NHWC."""
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_matmul_grad(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """Convolution x: [N,H,W,Cin], kernel: [kh,kw,Cin,Cout] -> [N,Ho,Wo,Cout]; kernel gradient by a matmul."""
    return conv2d(x, kernel, strides, padding)


def _fwd(x, kernel, strides, padding):
    return conv2d(x, kernel, strides, padding), (x, kernel)


def input_gradient(g: jax.Array, kernel: jax.Array, x_hw: tuple[int, int], strides, padding: Padding) -> jax.Array:
    """dL/dx of ``conv2d``: g [N,Ho,Wo,Cout] dilated by the strides, convolved with the flipped kernel, its in
    and out channels swapped -> [N,H,W,Cin].

    The swapped kernel is materialised behind ``lax.optimization_barrier``. Autodiff expresses the swap in the
    convolution's dimension numbers instead, and inside a loop body (scanned cells) XLA's CPU backend then ran
    that convolution on a slow generic kernel (the profile is in docs/performance.md).
    """
    flipped = lax.optimization_barrier(jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)))
    pads = []
    for size, k, s, (lo, _), out in zip(x_hw, kernel.shape[:2], strides, padding, g.shape[1:3], strict=True):
        before = k - 1 - lo
        pads.append((before, size + k - 1 - (out - 1) * s - 1 - before))
    return lax.conv_general_dilated(
        g, flipped, (1, 1), pads, lhs_dilation=tuple(strides), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _bwd(strides, padding, residuals, g):
    x, kernel = residuals
    dx = input_gradient(g, kernel, x.shape[1:3], strides, padding)
    x_pad = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    (kh, kw), (ho, wo), (sh, sw) = kernel.shape[:2], g.shape[1:3], strides
    views = []
    for i in range(kh):
        for j in range(kw):
            limit = (x.shape[0], i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, x.shape[3])
            views.append(lax.slice(x_pad, (0, i, j, 0), limit, (1, sh, sw, 1)))
    patches = jnp.stack(views, axis=-2).reshape(-1, kh * kw * x.shape[3])  # [M, kh*kw*Cin]
    dk = jnp.dot(patches.T, g.reshape(-1, g.shape[-1]))  # [kh*kw*Cin, Cout]
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


conv_matmul_grad.defvjp(_fwd, _bwd)


class Conv(nn.Module):
    """Bias-free convolution with symmetric padding ``(k - 1) // 2`` per spatial axis."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32).astype(x.dtype)
        padding = tuple(((k - 1) // 2, (k - 1) // 2) for k in self.kernel_size)
        if resolve_impl(self.impl) == "cpu":
            return conv_matmul_grad(x, kernel, tuple(self.strides), padding)
        return conv2d(x, kernel, tuple(self.strides), padding)
