"""Candidate operations of the search spaces, registered by name.

Every op maps ``[N, H, W, C] -> [N, H/s, W/s, C]`` (NHWC, ``C`` in = ``C`` out,
stride ``s`` in {1, 2}), uses bias-free convolutions, and takes ``train`` to pick
batch statistics (training) or running averages (evaluation) in BatchNorm.
Inside mixed ops BatchNorm has no affine parameters (``affine=False``), as in
DARTS. A search space is a tuple of op names; see ``OP_SETS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.conv import Conv
from asose_jax.nn.depthwise import DepthwiseConv

# PyTorch BatchNorm2d(momentum=0.1, eps=1e-5) in Flax's convention. Unlike PyTorch, Flax updates the
# running variance with the biased batch variance (a factor (n-1)/n, negligible at search batch sizes).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
ACTIVATIONS = "activations"  # the collection where ``ReLU`` sows its activation pattern, when it is mutable


def batch_norm(train: bool, affine: bool, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm over the channel axis with PyTorch's momentum and epsilon."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        use_scale=affine,
        use_bias=affine,
        name=name,
    )


def conv(features: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1), name: str | None = None) -> Conv:
    """Bias-free convolution with symmetric 'same'-style padding ``(k - 1) // 2``."""
    return Conv(features, kernel, stride, name=name)


class ReLU(nn.Module):
    """``max(x, 0)``. When the caller makes ``ACTIVATIONS`` mutable it also sows the binary activation pattern
    ``x > 0`` (same shape as ``x``) that NASWOT scores (``--selection-measure nwot``); otherwise, and in ``init``,
    whose variables stay ``params`` and ``batch_stats``, it sows nothing."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.is_initializing():
            self.sow(ACTIVATIONS, "code", x > 0)
        return nn.relu(x)


class Gate(nn.Module):
    """``g * y`` with a learned scalar ``g`` initialised to zero: what growth puts on a new block, branch or
    cell, so that it starts as an exact no-op."""

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        return self.param("gate", nn.initializers.zeros, ()).astype(y.dtype) * y


class Zero(nn.Module):
    """``none``: zeros shaped like the strided input."""

    stride: int = 1

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return jnp.zeros_like(x[:, :: self.stride, :: self.stride, :])


class Identity(nn.Module):
    """``skip_connect`` at stride 1."""

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return x


class Pool(nn.Module):
    """3x3 pool, padding 1 (average excludes padding), followed by BatchNorm unless ``normalize`` is off (DARTS's
    evaluation network pools without it; its search's mixed op adds an affine-free one)."""

    kind: str  # "avg" or "max"
    stride: int = 1
    affine: bool = False
    normalize: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        window, strides, padding = (3, 3), (self.stride, self.stride), ((1, 1), (1, 1))
        if self.kind == "avg":
            y = nn.avg_pool(x, window, strides, padding, count_include_pad=False)
        else:
            y = nn.max_pool(x, window, strides, padding)
        return batch_norm(train, self.affine)(y) if self.normalize else y


class FactorizedReduce(nn.Module):
    """Halves the resolution: ReLU, two 1x1 stride-2 convs (on x and x shifted by one pixel), concat, BN."""

    features: int
    affine: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.features % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {self.features}")
        x = ReLU()(x)
        half = self.features // 2
        a = conv(half, (1, 1), (2, 2), name="conv_a")(x)
        shifted = jnp.pad(x[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))
        b = conv(half, (1, 1), (2, 2), name="conv_b")(shifted)
        return batch_norm(train, self.affine)(jnp.concatenate([a, b], axis=-1))


class ReLUConvBN(nn.Module):
    """ReLU, full ``k x k`` conv (stride s), BN. ``nor_conv_k`` and cell preprocessing."""

    features: int
    kernel_size: int
    stride: int = 1
    affine: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        k = self.kernel_size
        x = conv(self.features, (k, k), (self.stride, self.stride))(ReLU()(x))
        return batch_norm(train, self.affine)(x)


class DilConv(nn.Module):
    """ReLU, depthwise ``k x k`` (dilation d, stride s), pointwise 1x1, BN."""

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 2
    affine: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = DepthwiseConv(self.kernel_size, self.stride, self.dilation)(ReLU()(x))
        x = conv(self.features, (1, 1))(x)
        return batch_norm(train, self.affine)(x)


class SepConv(nn.Module):
    """Two stacked dilation-1 ``DilConv``s; only the first carries the stride."""

    features: int
    kernel_size: int
    stride: int = 1
    affine: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        k, c = self.kernel_size, self.features
        x = DilConv(c, k, self.stride, dilation=1, affine=self.affine)(x, train)
        return DilConv(c, k, 1, dilation=1, affine=self.affine)(x, train)


class Conv7x1x1x7(nn.Module):
    """ReLU, full 1x7 conv (stride (1, s)), full 7x1 conv (stride (s, 1)), BN."""

    features: int
    stride: int = 1
    affine: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(self.features, (1, 7), (1, self.stride))(ReLU()(x))
        x = conv(self.features, (7, 1), (self.stride, 1))(x)
        return batch_norm(train, self.affine)(x)


OpFactory = Callable[..., nn.Module]


def _skip(c: int, stride: int, affine: bool, name: str | None = None) -> nn.Module:
    if stride == 1:
        return Identity(name=name)
    return FactorizedReduce(c, affine, name=name)


OPS: dict[str, OpFactory] = {
    "none": lambda c, s, affine, name=None: Zero(s, name=name),
    "avg_pool_3x3": lambda c, s, affine, name=None: Pool("avg", s, affine, name=name),
    "max_pool_3x3": lambda c, s, affine, name=None: Pool("max", s, affine, name=name),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, s, affine, name=None: SepConv(c, 3, s, affine, name=name),
    "sep_conv_5x5": lambda c, s, affine, name=None: SepConv(c, 5, s, affine, name=name),
    "sep_conv_7x7": lambda c, s, affine, name=None: SepConv(c, 7, s, affine, name=name),
    "dil_conv_3x3": lambda c, s, affine, name=None: DilConv(c, 3, s, 2, affine, name=name),
    "dil_conv_5x5": lambda c, s, affine, name=None: DilConv(c, 5, s, 2, affine, name=name),
    "conv_7x1_1x7": lambda c, s, affine, name=None: Conv7x1x1x7(c, s, affine, name=name),
    "nor_conv_1x1": lambda c, s, affine, name=None: ReLUConvBN(c, 1, s, affine, name=name),
    "nor_conv_3x3": lambda c, s, affine, name=None: ReLUConvBN(c, 3, s, affine, name=name),
}

ASO_SE_OPS = (
    "none",
    "avg_pool_3x3",
    "max_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_7x1_1x7",
)
DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

OP_SETS: dict[str, tuple[str, ...]] = {"aso_se": ASO_SE_OPS, "darts": DARTS_OPS, "nb201": NB201_OPS}


def check_op_names(names: Sequence[str]) -> tuple[str, ...]:
    """Returns ``names`` as a tuple; raises ValueError naming any unknown op and the valid ones."""
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"unknown op name(s) {unknown}; valid names are: {', '.join(OPS)}")
    if not names:
        raise ValueError("an op set needs at least one op name")
    return tuple(names)


def make_op(name: str, channels: int, stride: int, affine: bool = False, op_name: str | None = None) -> nn.Module:
    """Builds the op registered as ``name`` for ``channels`` channels at ``stride``."""
    check_op_names([name])
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    return OPS[name](channels, stride, affine, name=op_name)
