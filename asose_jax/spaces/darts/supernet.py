"""``darts``: the DARTS cell network (normal and reduction cells of 4 nodes, 14 edges)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.mixed_op import MixedOp
from asose_jax.nn.operations import DARTS_OPS, FactorizedReduce, ReLUConvBN, batch_norm, conv

STEPS = 4  # intermediate nodes per cell
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14


def edge_inputs() -> list[tuple[int, int]]:
    """(node, input state) of every edge, in logit-row order; states 0, 1 are the cell inputs."""
    return [(i, j) for i in range(STEPS) for j in range(2 + i)]


def preprocess_inputs(s0, s1, channels: int, reduction_prev: bool, affine: bool, train: bool):
    """A cell's two inputs brought to ``channels`` (called inside a compact cell): ``s1`` by ReLU-conv1x1-BN,
    ``s0`` likewise, or by ``FactorizedReduce`` when the previous cell halved the resolution."""
    if reduction_prev:
        s0 = FactorizedReduce(channels, affine=affine, name="preprocess0")(s0, train)
    else:
        s0 = ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess0")(s0, train)
    return s0, ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess1")(s1, train)


class SearchCell(nn.Module):
    """A DARTS search cell: node i = sum over states j < 2 + i of MixedOp_(i, j)(state j)."""

    channels: int
    reduction: bool
    reduction_prev: bool
    op_names: Sequence[str]

    @nn.compact
    def __call__(self, s0, s1, weights: jax.Array, train: bool, single_path: bool = False):
        c = self.channels
        states = list(preprocess_inputs(s0, s1, c, self.reduction_prev, False, train))
        for e, (i, j) in enumerate(edge_inputs()):
            if j == 0:
                states.append(None)
            stride = 2 if self.reduction and j < 2 else 1
            y = MixedOp(c, stride, self.op_names, name=f"edge_{i}_{j}")(states[j], weights[e], train, single_path)
            states[2 + i] = y if states[2 + i] is None else states[2 + i] + y
        return jnp.concatenate(states[-STEPS:], axis=-1)


class DartsNetwork(nn.Module):
    """Stem conv3x3 to 3C + BN, ``layers`` cells (reductions at L//3 and 2L//3), pool, linear.

    Architecture weights: ``{"normal": [14, K], "reduce": [14, K]}``.
    """

    space: ClassVar[str] = "darts"
    init_channels: int = 16
    layers: int = 8
    num_classes: int = 10
    op_names: Sequence[str] = DARTS_OPS

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        k = len(self.op_names)
        return {"normal": (NUM_EDGES, k), "reduce": (NUM_EDGES, k)}

    def reduction_layers(self) -> tuple[int, ...]:
        return tuple(sorted({self.layers // 3, 2 * self.layers // 3}))

    @nn.compact
    def __call__(self, images: jax.Array, arch_weights: dict, train: bool, single_path: bool = False):
        c = self.init_channels
        s = conv(3 * c, (3, 3), name="stem_conv")(images)
        s0 = s1 = batch_norm(train, affine=True, name="stem_bn")(s)
        reduction_prev = False
        for i in range(self.layers):
            reduction = i in self.reduction_layers()
            c = c * 2 if reduction else c
            weights = arch_weights["reduce" if reduction else "normal"]
            cell = SearchCell(c, reduction, reduction_prev, self.op_names, name=f"cell_{i}")
            s0, s1 = s1, cell(s0, s1, weights, train, single_path)
            reduction_prev = reduction
        x = jnp.mean(s1, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(x)
