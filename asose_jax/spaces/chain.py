"""``chain``: the ASO-SE network, a line of residual blocks with one mixed op each."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.mixed_op import MixedOp
from asose_jax.operations import ASO_SE_OPS, batch_norm, conv


class ChainBlock(nn.Module):
    """``h = preprocess(x)``; ``y = ReLU(BN(conv1x1(MixedOp(h) + h)))``.

    The 1x1 conv + BN preprocessing exists only where the block changes the
    stride or the channel count; the mixed op always runs at stride 1.
    """

    channels: int
    stride: int
    op_names: Sequence[str]

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array, train: bool, single_path: bool = False):
        h = x
        if self.stride != 1 or x.shape[-1] != self.channels:
            h = conv(self.channels, (1, 1), (self.stride, self.stride), name="preprocess_conv")(x)
            h = batch_norm(train, affine=True, name="preprocess_bn")(h)
        m = MixedOp(self.channels, 1, self.op_names, name="mixed_op")(h, weights, train, single_path)
        y = conv(self.channels, (1, 1), name="final_conv")(m + h)
        return nn.relu(batch_norm(train, affine=True, name="final_bn")(y))


class ChainNetwork(nn.Module):
    """Stem conv3x3 -> BN -> ReLU, ``depth`` blocks, global average pool, linear head.

    The block at index ``depth // 2`` halves the resolution and doubles the
    channels. Architecture weights: ``{"blocks": [depth, K]}``.
    """

    init_channels: int = 32
    depth: int = 4
    num_classes: int = 10
    op_names: Sequence[str] = ASO_SE_OPS

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        return {"blocks": (self.depth, len(self.op_names))}

    def block_plan(self) -> list[tuple[int, int]]:
        """(channels, stride) of every block."""
        plan, c = [], self.init_channels
        for i in range(self.depth):
            stride = 2 if i == self.depth // 2 else 1
            c = c * stride
            plan.append((c, stride))
        return plan

    @nn.compact
    def __call__(self, images: jax.Array, arch_weights: dict, train: bool, single_path: bool = False):
        x = conv(self.init_channels, (3, 3), name="stem_conv")(images)
        x = nn.relu(batch_norm(train, affine=True, name="stem_bn")(x))
        for i, (c, stride) in enumerate(self.block_plan()):
            x = ChainBlock(c, stride, self.op_names, name=f"block_{i}")(
                x, arch_weights["blocks"][i], train, single_path
            )
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(x)
