"""``darts``: the DARTS cell network (normal and reduction cells of 4 nodes, 14 edges).

The supernet's cells all differ in shape (at its default 8 cells), so instead of cells, ``scan_cells`` scans a
cell's edges: the 8 edges that read the cell's inputs run through one compiled body, the 6 that read its nodes
through another (``nn.scan`` over their stacked variables, modules ``input_edges_scan`` and ``node_edges_scan``).
XLA then compiles 2 mixed ops per cell instead of 14 (compile times: docs/performance.md).
``scan_cells=False`` unrolls them (``edge_{i}_{j}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.mixed_op import MixedOp, scanned_edges
from asose_jax.nn.operations import DARTS_OPS, FactorizedReduce, ReLUConvBN, batch_norm, conv

STEPS = 4  # intermediate nodes per cell
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14


def edge_inputs() -> list[tuple[int, int]]:
    """(node, input state) of every edge, in logit-row order; states 0, 1 are the cell inputs."""
    return [(i, j) for i in range(STEPS) for j in range(2 + i)]


def edge_groups() -> tuple[list[int], list[int]]:
    """Logit rows of the edges that read a cell input (states 0, 1) and of those that read a node, each in row
    order, so that a node's edges come after every edge into an earlier node."""
    edges = edge_inputs()
    return [e for e, (_, j) in enumerate(edges) if j < 2], [e for e, (_, j) in enumerate(edges) if j >= 2]


def preprocess_inputs(s0, s1, channels: int, reduction_prev: bool, affine: bool, train: bool):
    """A cell's two inputs brought to ``channels`` (called inside a compact cell): ``s1`` by ReLU-conv1x1-BN,
    ``s0`` likewise, or by ``FactorizedReduce`` when the previous cell halved the resolution."""
    if reduction_prev:
        s0 = FactorizedReduce(channels, affine=affine, name="preprocess0")(s0, train)
    else:
        s0 = ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess0")(s0, train)
    return s0, ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess1")(s1, train)


class SearchCell(nn.Module):
    """A DARTS search cell: node i = sum over states j < 2 + i of MixedOp_(i, j)(state j); unrolled (modules
    ``edge_{i}_{j}``) or, with ``scan_edges``, through two scans (see the module docstring)."""

    channels: int
    reduction: bool
    reduction_prev: bool
    op_names: Sequence[str]
    scan_edges: bool = False

    @nn.compact
    def __call__(self, s0, s1, weights: jax.Array, train: bool, single_path: bool = False):
        c = self.channels
        states = list(preprocess_inputs(s0, s1, c, self.reduction_prev, False, train))
        if self.scan_edges:
            return self._scanned(*states, weights, train, single_path)
        for e, (i, j) in enumerate(edge_inputs()):
            if j == 0:
                states.append(None)
            stride = 2 if self.reduction and j < 2 else 1
            y = MixedOp(c, stride, self.op_names, name=f"edge_{i}_{j}")(states[j], weights[e], train, single_path)
            states[2 + i] = y if states[2 + i] is None else states[2 + i] + y
        return jnp.concatenate(states[-STEPS:], axis=-1)

    def _scanned(self, s0, s1, weights: jax.Array, train: bool, single_path: bool) -> jax.Array:
        stride = 2 if self.reduction else 1
        n, h, w, c = s1.shape
        nodes = jnp.zeros((STEPS, n, -(-h // stride), -(-w // stride), c), s1.dtype)
        edges = edge_inputs()
        from_inputs, from_nodes = edge_groups()
        op, inputs = {"channels": c, "op_names": self.op_names}, jnp.stack([s0, s1])
        input_edges, input_rows = [edges[e] for e in from_inputs], weights[jnp.array(from_inputs)]
        nodes = scanned_edges(nodes, input_edges, input_rows, inputs, {**op, "stride": stride}, train, single_path,
                              "input_edges")  # fmt: skip
        node_edges = [(i, j - 2) for i, j in (edges[e] for e in from_nodes)]  # node k is state 2 + k
        nodes = scanned_edges(nodes, node_edges, weights[jnp.array(from_nodes)], None, {**op, "stride": 1}, train,
                              single_path, "node_edges")  # fmt: skip
        return jnp.moveaxis(nodes, 0, -2).reshape(n, *nodes.shape[2:4], STEPS * c)  # = concatenating the nodes


class DartsNetwork(nn.Module):
    """Stem conv3x3 to 3C + BN, ``layers`` cells (reductions at L//3 and 2L//3), pool, linear.

    Architecture weights: ``{"normal": [14, K], "reduce": [14, K]}``.
    """

    space: ClassVar[str] = "darts"
    init_channels: int = 16
    layers: int = 8
    num_classes: int = 10
    op_names: Sequence[str] = DARTS_OPS
    scan_cells: bool = True  # here: each cell's edges through two compiled bodies (see the module docstring)

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
            cell = SearchCell(c, reduction, reduction_prev, self.op_names, self.scan_cells, name=f"cell_{i}")
            s0, s1 = s1, cell(s0, s1, weights, train, single_path)
            reduction_prev = reduction
        x = jnp.mean(s1, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(x)
