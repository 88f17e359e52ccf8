"""The NAS-Bench-201 evaluation network of a genotype."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.operations import make_op
from asose_jax.spaces.nb201.genotype import NB201Genotype
from asose_jax.spaces.nb201.supernet import macro_network


class NB201Cell(nn.Module):
    """Node i = sum over its (op, j) of op(node j); ``none`` edges contribute nothing. Output: the last node."""

    genotype: NB201Genotype
    channels: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        nodes = [x]
        for i, node in enumerate(self.genotype.nodes, start=1):
            outs = [
                make_op(op, self.channels, 1, affine=True, op_name=f"edge_{i}_{j}")(nodes[j], train)
                for op, j in node
                if op != "none"
            ]
            nodes.append(sum(outs[1:], outs[0]) if outs else jnp.zeros_like(x))
        return nodes[-1]


class NB201Net(nn.Module):
    """Stem conv3x3 + BN, 3 stages of ``cells_per_stage`` cells at C, 2C, 4C with residual blocks
    between, BN, ReLU, pool, linear (the NAS-Bench-201 evaluation network)."""

    genotype: NB201Genotype
    init_channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10
    scan_cells: bool = True

    @nn.compact
    def __call__(self, images: jax.Array, train: bool, drop_rate: jax.Array | float | None = None):
        cell = (NB201Cell, {"genotype": self.genotype}, (train,))
        return macro_network(images, self.init_channels, self.cells_per_stage, self.num_classes, cell, train,
                             scan_cells=self.scan_cells), None  # fmt: skip
