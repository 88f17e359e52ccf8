"""``nb201``: the NAS-Bench-201 network (3 stages of cells with 6 edges, one shared logit array).

Depth growth appends gated cells ``x + g * cell(x)`` (``g`` initialised to zero) to a stage:
``grown_cells[s]`` of them after the stage's ``cells_per_stage`` cells, sharing the cell's logits.

A stage's ``cells_per_stage`` cells have one shape, so with ``scan_cells`` (the default) they run through one
compiled body (``nn.scan`` over their stacked variables, module ``stage_{s}_scan``): XLA compiles a cell once per
stage instead of once per cell. ``scan_cells=False`` unrolls them (modules ``stage_{s}_cell_{i}``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.initializers import SCANNED
from asose_jax.nn.mixed_op import MixedOp
from asose_jax.nn.operations import NB201_OPS, Gate, ReLU, ReLUConvBN, batch_norm, conv
from asose_jax.nn.scanned import stacked_scan

NODES = 4  # node 0 is the cell input, node 3 its output


def edge_inputs() -> list[tuple[int, int]]:
    """(node, input node) of every edge, in logit-row order: (1,0), (2,0), (2,1), (3,0), (3,1), (3,2)."""
    return [(i, j) for i in range(1, NODES) for j in range(i)]


class SearchCell(nn.Module):
    """Node i = sum over j < i of MixedOp_(i, j)(node j); the output is node 3."""

    channels: int
    op_names: Sequence[str]

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array, train: bool, single_path: bool = False):
        nodes = [x]
        for e, (i, j) in enumerate(edge_inputs()):
            y = MixedOp(self.channels, 1, self.op_names, name=f"edge_{i}_{j}")(nodes[j], weights[e], train, single_path)
            if j == 0:
                nodes.append(y)
            else:
                nodes[i] = nodes[i] + y
        return nodes[-1]


class ResidualBlock(nn.Module):
    """NAS-Bench-201's stride-2 basic block between stages."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = ReLUConvBN(self.features, 3, 2, affine=True, name="conv_a")(x, train)
        y = ReLUConvBN(self.features, 3, 1, affine=True, name="conv_b")(y, train)
        shortcut = nn.avg_pool(x, (2, 2), (2, 2))
        shortcut = conv(self.features, (1, 1), name="downsample")(shortcut)
        return shortcut + y


class NB201Network(nn.Module):
    """Stem conv3x3 + BN, 3 stages of ``cells_per_stage`` cells (plus ``grown_cells[s]`` gated ones) at C, 2C,
    4C, BN, ReLU, pool, linear.

    Architecture weights: ``{"cell": [6, K]}``, shared by every cell.
    """

    space: ClassVar[str] = "nb201"
    init_channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10
    op_names: Sequence[str] = NB201_OPS
    grown_cells: tuple[int, ...] = (0, 0, 0)
    scan_cells: bool = True

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        return {"cell": (len(edge_inputs()), len(self.op_names))}

    @nn.compact
    def __call__(self, images: jax.Array, arch_weights: dict, train: bool, single_path: bool = False):
        cell = (SearchCell, {"op_names": self.op_names}, (arch_weights["cell"], train, single_path))
        return macro_network(images, self.init_channels, self.cells_per_stage, self.num_classes, cell, train,
                             self.grown_cells, self.scan_cells)  # fmt: skip


@functools.cache
def _scan_step(cell: type[nn.Module]) -> type[nn.Module]:
    """``cell`` as a scan body: ``(x, *args) -> (cell(x, *args), None)``."""

    class Step(cell):
        def __call__(self, x, *args):
            return super().__call__(x, *args), None

    Step.__name__ = f"{cell.__name__}Step"
    return Step


def repeat_cell(
    x: jax.Array, cell: type[nn.Module], attributes: dict, args: tuple, count: int, name: str, scan: bool
) -> jax.Array:
    """``count`` cells ``cell(**attributes)(x, *args)`` in sequence, called inside a compact module.

    Unrolled (always for a single cell, which a scan would not compile faster): modules ``{name}_cell_{i}``.
    Scanned: one module ``{name}_scan`` whose variables are stacked along a
    leading axis of ``count`` (``stacked_scan``; one compiled body); ``args`` are the same for every cell, its
    Python bools (``train``, ``single_path``) static.
    """
    if not scan or count <= 1:
        for i in range(count):
            x = cell(**attributes, name=f"{name}_cell_{i}")(x, *args)
        return x
    static = tuple(2 + i for i, arg in enumerate(args) if isinstance(arg, bool))  # self is argument 0, x 1
    scanned = stacked_scan(_scan_step(cell), count, (nn.broadcast,) * len(args), static)
    return scanned(**attributes, name=name + SCANNED)(x, *args)[0]


def macro_network(
    images: jax.Array,
    init_channels: int,
    cells_per_stage: int,
    num_classes: int,
    cell: tuple[type[nn.Module], dict, tuple],
    train: bool,
    grown_cells: Sequence[int] = (0, 0, 0),
    scan_cells: bool = True,
) -> jax.Array:
    """NAS-Bench-201's skeleton, called inside a compact module: stem conv3x3 + BN, 3 stages of
    ``cells_per_stage`` cells, then ``grown_cells[s]`` gated ones, at C, 2C, 4C joined by ``ResidualBlock``s, BN,
    ReLU, global pool, linear. ``cell`` is ``(module class, attributes but channels, call arguments after x)``;
    a stage's cells are scanned or unrolled by ``repeat_cell``. Shared by the search network and the discrete
    one."""
    cell_type, attributes, args = cell
    c = init_channels
    x = batch_norm(train, affine=True, name="stem_bn")(conv(c, (3, 3), name="stem_conv")(images))
    for stage in range(3):
        if stage:
            c *= 2
            x = ResidualBlock(c, name=f"reduce_{stage}")(x, train)
        x = repeat_cell(x, cell_type, {**attributes, "channels": c}, args, cells_per_stage, f"stage_{stage}",
                        scan_cells)  # fmt: skip
        for i in range(grown_cells[stage]):
            grown = cell_type(**attributes, channels=c, name=f"stage_{stage}_grown_{i}")(x, *args)
            x = x + Gate(name=f"stage_{stage}_grown_{i}_gate")(grown)
    x = ReLU(name="final_relu")(batch_norm(train, affine=True, name="final_bn")(x))
    return nn.Dense(num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))
